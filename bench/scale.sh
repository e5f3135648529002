#!/usr/bin/env bash
# scale.sh: data parallelism on the CPU (docs/scaling.md): `cvae bench` on one process of 2
# OpenMP threads against `mpirun -np 2` processes of 1 thread each, at the same global
# batch, so both use the same cores. For each shape the two alternate ROUNDS times (the
# machine is shared and noisy); the summary gives the median samples/s of each, their
# ratio, and the all-reduce's share of the 2-rank step (rank 0's timed eager steps).
# Prints a markdown summary and writes OUT/scale.json with every run's figures.
#
# usage: bench/scale.sh [CVAE] [OUT] [ROUNDS]
#   CVAE    the program (default build/cvae), built with MPI (cvae --version says)
#   OUT     where the runs go (default a new temporary folder)
#   ROUNDS  alternations per shape (default 5)
# About 10 minutes on 2 cores at the default 5 rounds.
set -euo pipefail
cvae=${1:-build/cvae}
out=${2:-$(mktemp -d)}
rounds=${3:-5}
mkdir -p "$out"
"$cvae" --version | grep -q '^data parallelism: MPI' ||
    { echo "bench/scale.sh: $cvae was built without MPI" >&2; exit 1; }
launch=(mpirun --oversubscribe -x OMP_NUM_THREADS=1 -np 2)
[ "$(id -u)" -eq 0 ] && launch+=(--allow-run-as-root)

# NAME:FLAGS, the shapes measured
shapes=("default:--batch 128" "batch-1024:--batch 1024" "hidden-1024x2:--hidden 1024,1024 --batch 512")
for shape in "${shapes[@]}"; do
    name=${shape%%:*} flags=${shape#*:}
    for ((i = 1; i <= rounds; i++)); do
        # shellcheck disable=SC2086 # the shape's flags are separate words
        OMP_NUM_THREADS=2 "$cvae" bench --device cpu --steps 100 --json $flags \
            >"$out/$name.one.$i.json"
        # shellcheck disable=SC2086
        OMP_NUM_THREADS=1 "${launch[@]}" "$cvae" bench --device cpu --steps 100 --json $flags \
            >"$out/$name.two.$i.json"
    done
done

python3 - "$out" "$rounds" "${shapes[@]%%:*}" <<'EOF'
import json, statistics, sys
out, rounds, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
summary = {}
def load(name, kind):
    return [json.load(open(f"{out}/{name}.{kind}.{i}.json")) for i in range(1, rounds + 1)]
print(f"| shape | 1 rank x 2 threads, samples/s | 2 ranks x 1 thread, samples/s | ratio "
      f"| all-reduce per step (2 ranks) | its share |")
print("| --- | --- | --- | --- | --- | --- |")
for name in names:
    one, two = load(name, "one"), load(name, "two")
    r1 = statistics.median(r["samples_per_s"] for r in one)
    r2 = statistics.median(r["samples_per_s"] for r in two)
    ar = [next(f for f in r["families"] if f["family"] == "allreduce") for r in two]
    ms = statistics.median(f["ms_per_step"] for f in ar)
    share = statistics.median(f["share_pct"] for f in ar)
    mb = ar[0]["bytes_per_step"] / 2 / 1e6  # read and written: the buffer twice
    s = one[0]["shape"]
    print(f"| {name} (hidden {','.join(map(str, s['hidden']))}, batch {s['batch']}, "
          f"{s['params']} parameters) | {r1:.0f} | {r2:.0f} | {r2 / r1:.3f} | "
          f"{ms * 1000:.0f} us ({mb:.2f} MB through the all-reduce) | {share:.1f}% |")
    summary[name] = {"shape": s, "one_rank_two_threads": [r["samples_per_s"] for r in one],
                     "two_ranks_one_thread": [r["samples_per_s"] for r in two],
                     "median_one": r1, "median_two": r2, "ratio": r2 / r1,
                     "allreduce_ms_per_step": [f["ms_per_step"] for f in ar],
                     "allreduce_share_pct": [f["share_pct"] for f in ar]}
print(f"\ndevice: {one[0]['device']}; medians of {rounds} alternated runs of 100 steps each")
json.dump(summary, open(f"{out}/scale.json", "w"), indent=1)
EOF
echo "runs in $out"
