#!/usr/bin/env bash
# The whole test suite under AddressSanitizer and UndefinedBehaviorSanitizer (a second
# build in build-asan, CPU only: the CUDA runtime and ASan do not mix), then one short
# training and its IWAE evaluation under valgrind. Any report fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
{ test -f build-asan/build.ninja ||
  meson setup build-asan -Dcuda=disabled -Db_sanitize=address,undefined -Db_lundef=false \
        -Dbuildtype=debugoptimized; }
ninja -C build-asan
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
meson test -C build-asan --print-errorlogs --num-processes 2 --no-suite fresh-clone

# valgrind on a CPU-only build (libcublasLt's load-time dlopen trips valgrind inside the
# dynamic loader, outside any code of ours); valgrind has no AVX-512, so OpenBLAS gets its
# AVX2 kernels
{ test -f build-cpu/build.ninja || meson setup build-cpu -Dcuda=disabled -Dtests=disabled; }
ninja -C build-cpu
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
python3 tests/random_idx_set.py "$data" 256 64
# every precision the CPU runs (bf16 and tf32x3 use the GEMM operand scratch)
for precision in fp32 bf16 tf32x3; do
    OPENBLAS_CORETYPE=Haswell OMP_NUM_THREADS=2 valgrind --error-exitcode=99 --leak-check=full \
        --errors-for-leak-kinds=definite --show-leak-kinds=definite --quiet \
        build-cpu/cvae train --data "$data" --epochs 2 --hidden 32 --latent 4 --batch 32 \
        --device cpu --precision "$precision" --out "$data/run-$precision"
done
# and an evaluation: the IWAE and marginal log-sum-exps on the backend
OPENBLAS_CORETYPE=Haswell OMP_NUM_THREADS=2 valgrind --error-exitcode=99 --leak-check=full \
    --errors-for-leak-kinds=definite --show-leak-kinds=definite --quiet \
    build-cpu/cvae eval --model "$data/run-fp32/model.ckpt" --data "$data" --iwae 4 --marginal \
    --device cpu >/dev/null
echo "sanitizers and valgrind: clean"
