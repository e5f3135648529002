#!/usr/bin/env bash
# tests/gpu.sh: the CUDA backend's checks, on a machine with an NVIDIA GPU.
#
#   1. the CUDA test programs (tests/test_cuda.c, tests/test_cuda_objectives.c), plain;
#   2. the same under compute-sanitizer's memcheck, racecheck, initcheck and synccheck;
#   3. one short training per option family under each of those four tools: the default
#      model; --prior conditional --binarize; --likelihood gaussian; --precision tf32;
#      --precision bf16 when `cvae train --help` lists it (otherwise it says it skips it);
#      condition vectors on float RGB images (.npy) with the linear prior; free bits; the
#      IWAE objective; and a learned Gaussian sigma (each training writes its report page,
#      whose pictures are drawn on the GPU);
#   4. cvae encode and cvae decode on the GPU under each tool.
# Any failure, and any error a tool reports (--error-exitcode), fails the run.
#
# Usage, from a build folder (default build):   bash tests/gpu.sh [BUILD_DIR]
# or with the packed layout of pack.sh, from the project root:
#   source .gpu/env.sh && bash tests/gpu.sh      (uses $B/test_cuda and $CVAE_BIN)
# Under the sanitizers the tests run with CVAE_TEST_QUICK=1 (no 4096 x 4096 shapes, 40
# training steps instead of 200); CVAE_GPU_FILTER (a Criterion --filter pattern) narrows
# them further. The trainings use a small synthetic data set (python3 writes it).
# Exit status: 0 all clean, 1 a failure, 77 no GPU here (skipped, not passed).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

if [ -n "${B:-}" ]; then
    test_bin=$B/test_cuda
    objectives_bin=$B/test_cuda_objectives
    cvae=${CVAE_BIN:-$B/cvae}
else
    build=${1:-build}
    test_bin=$build/tests/test_cuda
    objectives_bin=$build/tests/test_cuda_objectives
    cvae=$build/cvae
fi

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    echo "tests/gpu.sh: no NVIDIA GPU on this machine: nothing run (skipped, exit 77)"
    exit 77
fi
for f in "$test_bin" "$objectives_bin" "$cvae"; do
    [ -x "$f" ] || { echo "tests/gpu.sh: $f is missing: build with -Dcuda=enabled first" >&2; exit 1; }
done
san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
[ -x "$san" ] || { echo "tests/gpu.sh: compute-sanitizer not found (PATH, /usr/local/cuda/bin)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work/data" <<'PY' || { echo "tests/gpu.sh: python3 could not write the data set" >&2; exit 1; }
import os, random, struct, sys
rng = random.Random(7)
d = sys.argv[1]
os.makedirs(d)
def idx(dims, payload):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", x) for x in dims) + payload
for split, n in (("train", 512), ("t10k", 128)):
    labels = bytes(rng.randrange(10) for _ in range(n))
    # each class a bright band of rows, plus noise
    pix = bytearray()
    for c in labels:
        for y in range(28):
            for x in range(28):
                pix.append(min(255, (200 if y // 3 == c else 0) + rng.randrange(56)))
    open(os.path.join(d, f"{split}-images-idx3-ubyte"), "wb").write(idx([n, 28, 28], bytes(pix)))
    open(os.path.join(d, f"{split}-labels-idx1-ubyte"), "wb").write(idx([n], labels))
# condition vectors (width 5) and float RGB images of 14 x 14 whose colour follows them
def npy(path, descr, shape, payload):
    dims = ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "")
    text = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (descr, dims)
    pad = (10 + len(text) + 1 + 63) // 64 * 64 - 10
    head = text.encode() + b" " * (pad - len(text) - 1) + b"\n"
    open(path, "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", pad) + head + payload)
v = os.path.join(os.path.dirname(d), "vectors")
os.makedirs(v)
for split, n in (("train", 384), ("test", 96)):
    cond = [[rng.uniform(-1, 1) for _ in range(5)] for _ in range(n)]
    px = [min(1.0, max(0.0, 0.5 + 0.4 * c[k % 3] + rng.uniform(-0.1, 0.1)))
          for c in cond for k in range(14 * 14 * 3)]
    npy(os.path.join(v, f"{split}_images.npy"), "<f4", (n, 14, 14, 3), struct.pack(f"<{len(px)}f", *px))
    flat = [x for c in cond for x in c]
    npy(os.path.join(v, f"{split}_conditions.npy"), "<f4", (n, 5), struct.pack(f"<{len(flat)}f", *flat))
PY

failures=0 n=0
run() { # run DESCRIPTION COMMAND...: its output goes to a log, shown when it fails
    local what=$1 log="$work/log.$((n += 1))"
    shift
    printf '%-72s ' "$what"
    if "$@" >"$log" 2>&1; then
        echo ok
    else
        local rc=$?
        echo "FAILED (exit $rc)"
        tail -n 40 "$log" | sed 's/^/    /'
        failures=$((failures + 1))
    fi
}

# NAME:DATA:FLAGS, DATA the folder under $work
families=("default:data:" "conditional-binarize:data:--prior conditional --binarize"
          "gaussian:data:--likelihood gaussian" "tf32:data:--precision tf32"
          "vectors-rgb:vectors:--prior conditional --likelihood gaussian"
          "free-bits:data:--prior conditional --free-bits 0.2"
          "iwae:data:--prior conditional --objective iwae --samples 3"
          "sigma-learned:vectors:--prior conditional --likelihood gaussian --sigma learned")
if "$cvae" train --help 2>&1 | grep -q 'bf16'; then
    families+=("bf16:data:--precision bf16")
else
    echo "cvae train --help does not list bf16: the --precision bf16 training is skipped"
fi
train() { # train DATA TOOL... FAMILY_FLAGS: one short epoch and an evaluation
    local out data=$1
    shift
    out=$(mktemp -d -p "$work")
    "$@" --data "$work/$data" --device cuda --epochs 1 --batch 128 --out "$out/run"
}

latent() { # TOOL...: a short GPU training, then cvae encode and decode under the tool
    local out
    out=$(mktemp -d -p "$work")
    "$cvae" train --data "$work/data" --device cuda --epochs 1 --hidden 64 --latent 8 \
        --out "$out/run" >/dev/null &&
        "$@" "$cvae" encode --model "$out/run/model.ckpt" --data "$work/data" --device cuda \
            --out "$out/posteriors.npy" &&
        python3 -c 'import random, struct, sys
z = struct.pack("<1024f", *(random.gauss(0, 1) for _ in range(1024)))
head = b"{\x27descr\x27: \x27<f4\x27, \x27fortran_order\x27: False, \x27shape\x27: (128, 8), }"
head += b" " * (117 - len(head)) + b"\n"
open(sys.argv[1], "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + head + z)' \
            "$out/z.npy" &&
        "$@" "$cvae" decode --model "$out/run/model.ckpt" --z "$out/z.npy" --device cuda \
            --labels "$work/data/t10k-labels-idx1-ubyte" --out "$out/decoded"
}

filter=()
[ -n "${CVAE_GPU_FILTER:-}" ] && filter=(--filter="$CVAE_GPU_FILTER")
# the CUDA module beside the program (or on the library path) and its CUDA libraries
run "cvae --version finds the CUDA module and its libraries" \
    bash -c '"$1" --version | tee /dev/stderr | grep -q "^CUDA module: .* are found"' _ "$cvae"
run "test_cuda" "$test_bin" "${filter[@]}"
run "test_cuda_objectives" "$objectives_bin" "${filter[@]}"
for tool in memcheck racecheck initcheck synccheck; do
    sanitize=("$san" --tool "$tool" --error-exitcode 99 --print-limit 20)
    for bin in "$test_bin" "$objectives_bin"; do
        run "$(basename "$bin") under $tool" env CVAE_TEST_QUICK=1 "${sanitize[@]}" "$bin" \
            --jobs=1 "${filter[@]}"
    done
    for fam in "${families[@]}"; do
        name=${fam%%:*} rest=${fam#*:}
        data=${rest%%:*} flags=${rest#*:}
        # shellcheck disable=SC2086 # the family's flags are separate words
        run "train ($name) under $tool" train "$data" "${sanitize[@]}" "$cvae" train $flags
    done
    run "encode and decode under $tool" latent "${sanitize[@]}"
done

if [ "$failures" -gt 0 ]; then
    echo "tests/gpu.sh: $failures of $n checks failed"
    exit 1
fi
echo "tests/gpu.sh: all $n checks passed on $(nvidia-smi -L | head -n 1)"
