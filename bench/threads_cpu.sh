#!/usr/bin/env bash
# OpenMP and OpenBLAS threads on the CPU: do they fight? `cvae bench --device cpu` under
# `perf stat` (software events: task-clock and context switches, which a VM without
# hardware counters still counts) in four settings, interleaved, RUNS times each:
#   default   cvae's own (OPENBLAS_NUM_THREADS=1, GOMP_SPINCOUNT=1000)
#   passive   OMP_WAIT_POLICY=passive (no spin at all)
#   spin      GOMP_SPINCOUNT=300000 (libgomp's default spin)
#   blas2     OPENBLAS_NUM_THREADS=2 (an OpenBLAS pool beside cvae's OpenMP threads)
# For each run: the bench's median step in samples/s, task-clock seconds, elapsed
# seconds, CPUs utilized (task-clock / elapsed) and context switches; the load average
# before and after. "CPUs utilized" below the thread count is time a thread spent off
# its core: asleep, or waiting behind another job.
#
# usage: bash bench/threads_cpu.sh [CVAE] [RUNS] [STEPS]   (defaults build/cvae 3 400)
set -euo pipefail
cvae=${1:-build/cvae}
runs=${2:-3}
steps=${3:-400}
command -v perf >/dev/null || { echo "threads_cpu.sh: perf is not installed (Debian: linux-perf)" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

settings=(default passive spin blas2)
env_of() {
    case $1 in
        default) echo "" ;;
        passive) echo "OMP_WAIT_POLICY=passive" ;;
        spin) echo "GOMP_SPINCOUNT=300000" ;;
        blas2) echo "OPENBLAS_NUM_THREADS=2" ;;
    esac
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$cvae" bench --device cpu --steps 1 2>&1 | head -1
printf '| setting | run | step, samples/s | task-clock s | elapsed s | CPUs utilized | context switches |\n'
printf '|---|---|---|---|---|---|---|\n'
for run in $(seq 1 "$runs"); do
    for s in "${settings[@]}"; do
        t0=$(date +%s.%N)
        # shellcheck disable=SC2046
        env $(env_of "$s") perf stat -x, -e task-clock,context-switches -o "$out/stat" \
            "$cvae" bench --device cpu --steps "$steps" --json >"$out/json" 2>/dev/null
        t1=$(date +%s.%N)
        /usr/bin/python3 - "$s" "$run" "$out/stat" "$out/json" "$t0" "$t1" <<'EOF'
import json, sys
setting, run, stat, js, t0, t1 = sys.argv[1:]
elapsed = float(t1) - float(t0)
ev = {}
for line in open(stat):
    f = line.strip().split(",")
    if len(f) > 2 and f[2] in ("task-clock", "context-switches"):
        ev[f[2]] = float(f[0])
b = json.load(open(js))
task = ev["task-clock"] / 1e3  # msec -> s
print(f"| {setting} | {run} | {b['samples_per_s']:.0f} | {task:.2f} | "
      f"{elapsed:.2f} | {task / elapsed:.2f} | {ev['context-switches']:.0f} |")
EOF
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
