#!/usr/bin/env bash
# checkpoint_cost.sh: what checkpoints cost a training run of the default model on the CPU
# (docs/design.md 4.4). cvae train measures it itself: its "checkpoint:" line gives the
# checkpoints written and the seconds spent saving (model.ckpt, model-best.ckpt and the
# device copies of each new best model) against the seconds of training. Two runs on
# Fashion-MNIST, one after the other:
#   default   the default rule (a checkpoint at the first epoch end a minute or more after
#             the last), for EPOCHS epochs;
#   every 1   a checkpoint at every epoch end (--checkpoint-every 1), the most the default
#             could ever write in epochs of a minute or more, for 10 epochs.
# The target: saving under 2% of the training time. Prints a markdown summary;
# bench/results/checkpoint-cost-cpu.md holds one.
#
# usage: bench/checkpoint_cost.sh [CVAE] [DATA] [EPOCHS] [OUT]
#   CVAE    the program (default build/cvae)
#   DATA    the data folder (default /usr/share/datasets/fashion-mnist)
#   EPOCHS  the default run's epochs (default 30: a few minutes, so the rule fires)
#   OUT     where the runs go (default a new temporary folder)
set -euo pipefail
cvae=${1:-build/cvae}
data=${2:-/usr/share/datasets/fashion-mnist}
epochs=${3:-30}
out=${4:-$(mktemp -d)}
mkdir -p "$out"

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -n): $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$cvae" train --data "$data" --device cpu --epochs "$epochs" --out "$out/default" \
    >"$out/default.log"
echo "# load between: $(cut -d' ' -f1-3 /proc/loadavg)"
"$cvae" train --data "$data" --device cpu --epochs 10 --checkpoint-every 1 \
    --out "$out/every1" >"$out/every1.log"
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$out" "$epochs" <<'EOF'
import re, sys
out, epochs = sys.argv[1], int(sys.argv[2])
line = re.compile(r"checkpoint: \S+ \((\d+) written; saving took ([0-9.]+) s, ([0-9.]+)% of "
                  r"the ([0-9.]+) s of training\)")
print("| run | epochs | checkpoints written | saving (s) | training (s) | saving share |")
print("| --- | --- | --- | --- | --- | --- |")
rows = {}
for name, e in (("default", epochs), ("every1", 10)):
    m = line.search(open(f"{out}/{name}.log").read())
    n, saving, share, total = int(m.group(1)), float(m.group(2)), float(m.group(3)), float(m.group(4))
    rows[name] = (n, saving, total)
    label = "default (a minute)" if name == "default" else "--checkpoint-every 1"
    print(f"| {label} | {e} | {n} | {saving:.3f} | {total:.1f} | {share:.2f}% |")
n, saving, total = rows["every1"]
print()
print(f"With a checkpoint at every epoch end, saving (model.ckpt and model-best.ckpt, each "
      f"fsynced, and the best model's copy) took {saving / n:.3f} s an epoch. The default "
      f"rule writes at most one checkpoint a minute: {100 * saving / n / 60:.2f}% of a minute "
      f"of training at that cost, the best model's copies at the other epoch ends included "
      f"in the default run's share above.")
EOF
