#!/usr/bin/env bash
# bf16_cpu.sh: the end-to-end check of --precision bf16 on the CPU (docs/design.md 2.6):
# the default model trained for 10 epochs on Fashion-MNIST in fp32 and in bf16 (seed 0),
# each scored by training's final test -ELBO (computed in the run's precision) and by
# `cvae eval` of its checkpoint (always fp32). The target: bf16 within 0.5 nat of fp32.
# Prints a markdown summary; bench/results/bf16-cpu.md holds one.
#
# usage: bench/bf16_cpu.sh [CVAE] [DATA] [OUT]
#   CVAE  the program (default build/cvae)
#   DATA  the data folder (default /usr/share/datasets/fashion-mnist)
#   OUT   where the runs go (default a new temporary folder)
# Each run takes 1 to 30 minutes on 2 cores, depending on what else the machine runs;
# they run one after the other, so on a quiet machine their samples/s compare.
set -euo pipefail
cvae=${1:-build/cvae}
data=${2:-/usr/share/datasets/fashion-mnist}
out=${3:-$(mktemp -d)}
mkdir -p "$out"

for p in fp32 bf16; do
    start=$(date +%s)
    "$cvae" train --data "$data" --device cpu --precision "$p" --out "$out/$p" \
        --metrics "$out/$p.jsonl" > "$out/$p.log"
    echo $(( $(date +%s) - start )) > "$out/$p.seconds"
    "$cvae" eval --model "$out/$p/model.ckpt" --data "$data" --device cpu --json \
        > "$out/$p.eval.json"
done

python3 - "$out" <<'EOF'
import json, re, sys
out = sys.argv[1]
rows = {}
for p in ("fp32", "bf16"):
    log = open(f"{out}/{p}.log").read()
    final = float(re.search(r"final test -ELBO ([0-9.]+)", log).group(1))
    ev = json.load(open(f"{out}/{p}.eval.json"))
    rate = [json.loads(l)["samples_per_s"] for l in open(f"{out}/{p}.jsonl")]
    secs = int(open(f"{out}/{p}.seconds").read())
    rows[p] = (final, ev["test_neg_elbo"], sum(rate[1:]) / len(rate[1:]), secs)
print("| precision | test -ELBO (training, its precision) | test -ELBO (cvae eval, fp32) "
      "| samples/s (epochs 2-10) | wall s |")
print("| --- | --- | --- | --- | --- |")
for p, (f, e, r, s) in rows.items():
    print(f"| {p} | {f:.4f} | {e:.4f} | {r:.0f} | {s} |")
d = rows["bf16"][0] - rows["fp32"][0]
print(f"\nbf16 - fp32: {d:+.4f} nat (training's figure), "
      f"{rows['bf16'][1] - rows['fp32'][1]:+.4f} nat (cvae eval); target |delta| <= 0.5: "
      f"{'met' if abs(d) <= 0.5 else 'NOT met'}")
EOF
echo "runs in $out"
