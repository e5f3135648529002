#!/usr/bin/env bash
# tests/emu/run.sh: the GPU tests (tests/test_cuda.c, tests/test_cuda_objectives.c) on a
# CPU emulation of CUDA, for a machine without a GPU. A development aid, not a test of any GPU, and not part of `meson test`.
#
# The kernels (src/kernels/*.cu, made plain C++ by transform.py) run with one fiber per
# CUDA thread (emu.h, emu_rt.cpp); backend_cuda.c and the rest of libcvae run unchanged
# over a fake CUDA runtime and cuBLAS in host memory (the backend linked in, in place of
# cuda_loader.c, which loads the CUDA module in a real build), so the GPU tests run and compare
# against the CPU backend as they would on a GPU. It finds indexing errors, missing or
# doubled work, barriers or warp operations not every thread reaches, reads or writes past
# an allocation or after its cudaFree, allocation or synchronization during graph capture,
# and host-side mistakes. It cannot find races, memory-ordering bugs or FMA and device
# math differences: only a GPU and tests/gpu.sh can.
#
# Usage: bash tests/emu/run.sh [BUILD_DIR] [Criterion arguments, e.g. --filter='cuda/adam*']
# BUILD_DIR (default build) is a configured Meson build: its generated headers are used.
# Builds build-emu/test_cuda and build-emu/cvae (an emulated `cvae`: --device cuda works),
# then runs the tests. x86-64 (the fiber switch is assembly), g++, OpenBLAS, Criterion,
# and the CUDA headers (CUDA_HOME, default /usr/local/cuda) are needed, not a GPU driver.
# The whole file takes about 5 minutes on 2 cores. A new CUDA runtime or cuBLAS(Lt) call in
# the backend needs a fake in emu_rt.cpp (the link says which).
set -euo pipefail
cd "$(dirname "$0")/../.." || exit 1
build=${1:-build}
[ $# -gt 0 ] && shift
[ -f "$build/build.ninja" ] || { echo "tests/emu/run.sh: $build is not a Meson build folder" >&2; exit 1; }
[ "$(uname -m)" = x86_64 ] || { echo "tests/emu/run.sh: x86-64 only" >&2; exit 1; }
cuda_inc=${CUDA_HOME:-/usr/local/cuda}/include
out="build-emu"
mkdir -p "$out/k" "$out/h"
# the build's configuration, but no NCCL and no ONNX export: the emulation has neither
mkdir -p "$out/cfg"
sed -e 's/^#define CV_BUILD_NCCL .*/#define CV_BUILD_NCCL 0/' \
    -e 's/^#define CV_BUILD_ONNX .*/#define CV_BUILD_ONNX 0/' "$build/build_info.h" >"$out/cfg/build_info.h"
inc=(-Iinclude -Isrc/kernels -Isrc/host -I"$out/cfg" -I"$build" -I"$build/include" -I"$cuda_inc" -Itests
     $(pkg-config --cflags stb))
cflags=(-std=c11 -O2 -g -D_GNU_SOURCE -fno-math-errno -fopenmp "${inc[@]}")
pids=()
for f in src/kernels/*.cu; do
    b=$(basename "$f" .cu)
    python3 tests/emu/transform.py "$f" "$out/k/$b.cpp"
    g++ -std=c++20 -O2 -g -fno-math-errno -include tests/emu/emu.h "${inc[@]}" \
        -c "$out/k/$b.cpp" -o "$out/k/$b.o" & pids+=($!)
done
g++ -std=c++20 -O2 -g "${inc[@]}" -c tests/emu/emu_rt.cpp -o "$out/emu_rt.o" & pids+=($!)
# MPI when Open MPI's headers are here (then build-emu/cvae runs data-parallel under
# mpirun, summing through host memory); the emulation has no NCCL
mpi_cflags=() mpi_libs=() comm=comm_single
if pkg-config --exists ompi-c; then
    read -ra mpi_cflags <<<"$(pkg-config --cflags ompi-c)"
    read -ra mpi_libs <<<"$(pkg-config --libs ompi-c)"
    comm=comm_mpi
fi
rm -f "$out"/h/*.o
for f in src/host/*/*.c tests/helpers.c tests/cuda_harness.c tests/test_cuda.c \
    tests/test_cuda_objectives.c; do
    b=$(basename "$f" .c)
    case $b in
    backend_cuda_absent | allreduce_nccl | onnx_export | cuda_loader | cpu_kernels_isa) continue ;;
    comm_mpi | comm_single) [ "$b" = "$comm" ] || continue ;;
    esac
    gcc "${cflags[@]}" "${mpi_cflags[@]}" -c "$f" -o "$out/h/$b.o" & pids+=($!)
done
# the CPU kernels once per instruction set, as src/host/backend/meson.build builds them
for isa in baseline:"" avx2:"-mavx2 -mfma" avx512:"-mavx2 -mfma -mavx512f"; do
    read -ra isa_flags <<<"${isa#*:}"
    gcc "${cflags[@]}" "${isa_flags[@]}" -ffp-contract=off -DCV_ISA="${isa%%:*}" \
        -c src/host/backend/cpu_kernels_isa.c -o "$out/h/cpu_kernels_${isa%%:*}.o" & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
lib=()
for o in "$out"/h/*.o; do
    case $(basename "$o") in cli_*|helpers.o|cuda_harness.o|test_cuda*.o) ;; *) lib+=("$o") ;; esac
done
libs=(-fopenmp -lopenblas -lz -lpng -ljpeg -lstb -lsleef -lm -ldl "${mpi_libs[@]}")
for t in test_cuda test_cuda_objectives; do
    g++ -rdynamic -o "$out/$t" "$out/h/$t.o" "$out/h/helpers.o" "$out/h/cuda_harness.o" \
        "${lib[@]}" "$out"/k/*.o "$out/emu_rt.o" -lcriterion "${libs[@]}"
done
g++ -rdynamic -o "$out/cvae" "$out"/h/cli_*.o "${lib[@]}" "$out"/k/*.o "$out/emu_rt.o" "${libs[@]}"
echo "tests/emu/run.sh: built $out/test_cuda, $out/test_cuda_objectives and $out/cvae; running the GPU tests emulated"
"$out/test_cuda" "$@" && exec "$out/test_cuda_objectives" "$@"
