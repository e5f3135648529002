#!/usr/bin/env bash
# The whole test suite under AddressSanitizer and UndefinedBehaviorSanitizer (a second
# build in build-asan, CPU only: the CUDA runtime and ASan do not mix), then short
# trainings (with their report pages), an IWAE evaluation, encode, decode, both exports,
# the latent pictures and a comparison page under valgrind. Any report fails the run.
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
vg() { # valgrind over a command, failing on any error or definite leak
    OPENBLAS_CORETYPE=Haswell OMP_NUM_THREADS=2 valgrind --error-exitcode=99 --leak-check=full \
        --errors-for-leak-kinds=definite --show-leak-kinds=definite --quiet "$@"
}
# every precision the CPU runs (bf16 and tf32x3 use the GEMM operand scratch); each run
# writes its report page at every epoch's end
for precision in fp32 bf16 tf32x3; do
    vg build-cpu/cvae train --data "$data" --epochs 2 --hidden 32 --latent 4 --batch 32 \
        --device cpu --precision "$precision" --out "$data/run-$precision"
done
# and an evaluation: the IWAE and marginal log-sum-exps on the backend
model="$data/run-fp32/model.ckpt"
vg build-cpu/cvae eval --model "$model" --data "$data" --iwae 4 --marginal --device cpu >/dev/null
# the latent space and the exports: encode, decode (64 latents of width 4), both export
# formats, the two latent pictures and a comparison page
python3 -c 'import random, struct, sys
z = struct.pack("<256f", *(random.gauss(0, 1) for _ in range(256)))
head = b"{\x27descr\x27: \x27<f4\x27, \x27fortran_order\x27: False, \x27shape\x27: (64, 4), }"
head += b" " * (117 - len(head)) + b"\n"
open(sys.argv[1], "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + head + z)' "$data/z.npy"
vg build-cpu/cvae encode --model "$model" --data "$data" --device cpu --out "$data/post.npy" >/dev/null
vg build-cpu/cvae decode --model "$model" --z "$data/z.npy" --class 1 --device cpu \
    --out "$data/decoded" >/dev/null
vg build-cpu/cvae export --model "$model" --format safetensors --out "$data/m.safetensors" >/dev/null
vg build-cpu/cvae export --model "$model" --format onnx --out "$data/onnx" >/dev/null
vg build-cpu/cvae generate --model "$model" --format traversal --device cpu \
    --out "$data/traversal.png" >/dev/null
vg build-cpu/cvae generate --model "$model" --format interpolate --data "$data" --device cpu \
    --out "$data/path.png" >/dev/null
vg build-cpu/cvae report "$data/run-fp32" "$data/run-bf16" --out "$data/compare.html" >/dev/null
echo "sanitizers and valgrind: clean"
