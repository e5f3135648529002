#!/usr/bin/env python3
"""How fast cvae starts, and how much memory it holds: a CUDA build against a CPU-only one.

For each tree (a CPU-only build and a CUDA build of one commit; several trees compare
commits), each command below runs --runs times, the programs interleaved round by round so
that they share the machine's noise; the median wall time (from spawn to exit, measured
here) and the median peak resident memory (GNU time's %M, a run of its own) of each:

  cvae --version, cvae info --model CKPT, cvae train --help    (the targets: a CUDA build
      under 30 MB and within 2x the CPU build's time)
  cvae train --help, with cvae's OpenBLAS and OpenMP settings already in the environment
      (the same without cvae's restart: the difference is what the restart costs)
  cvae train --data D --epochs 1 --device cuda                 (the first use of a GPU: the
      CUDA build loads its CUDA libraries; without a GPU it ends there, exit 2)

Then what each shared library costs to load alone (dlopen, RTLD_NOW, in a small C program
compiled here): its time and resident memory above the empty program's.

The checkpoint and data set are small ones made here with the first tree's CPU build.
Writes OUT.md and OUT.json (default bench/results/startup-cpu).

usage: python3 bench/startup.py --tree NAME CPU_CVAE CUDA_CVAE [--tree ...] [--runs 30]
           [--library NAME_OR_PATH ...] [--out PREFIX]
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GNU_TIME = "/usr/bin/time"  # Debian's `time` package

LIBRARIES = ["libcudart.so.13", "libcublasLt.so.13", "libnccl.so.2", "libmpi.so.40",
             "libopenblas.so.0", "libgomp.so.1", "libpng16.so.16", "libz.so.1",
             "libstdc++.so.6"]

DLOPEN_C = r"""
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!dlopen(argv[i], RTLD_NOW | RTLD_LOCAL)) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    return 0;
}
"""


def wall_ms(argv, env):
    """Milliseconds from spawn to exit; the exit status too."""
    t = time.perf_counter()
    rc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    return (time.perf_counter() - t) * 1000, rc


def peak_rss_kb(argv, env):
    """Peak resident KiB of argv (GNU time forks it from a small process of its own)."""
    r = subprocess.run([GNU_TIME, "-f", "%M"] + argv, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    return int(r.stderr.strip().splitlines()[-1])


def measure(cases, runs):
    """cases: {key: (argv, env)}; each run goes over every case in turn. {key: (ms, kb, rc)}."""
    times = {k: [] for k in cases}
    rss = {k: [] for k in cases}
    codes = {}
    for _ in range(runs):
        for k, (argv, env) in cases.items():
            ms, rc = wall_ms(argv, env)
            times[k].append(ms)
            codes[k] = rc
            rss[k].append(peak_rss_kb(argv, env))
    return {k: (statistics.median(times[k]), statistics.median(rss[k]), codes[k]) for k in cases}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", nargs=3, action="append", required=True,
                    metavar=("NAME", "CPU_CVAE", "CUDA_CVAE"))
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--library", action="append", help="a library to cost besides the list")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "startup-cpu"))
    args = ap.parse_args()
    if not os.access(GNU_TIME, os.X_OK):
        sys.exit(f"bench/startup.py: {GNU_TIME} is missing (Debian: apt-get install time)")
    libraries = LIBRARIES + (args.library or [])
    # the environment as a user's: cvae's own settings unset, so that it restarts as it would
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "GOMP_SPINCOUNT",
                        "OMP_WAIT_POLICY", "LD_DEBUG")}

    tmp = tempfile.mkdtemp()
    try:
        data = os.path.join(tmp, "data")
        os.mkdir(data)
        subprocess.run([sys.executable, os.path.join(ROOT, "tests", "random_idx_set.py"), data,
                        "256", "64"], check=True)
        first_cpu = args.tree[0][1]
        subprocess.run([first_cpu, "train", "--data", data, "--epochs", "1", "--device", "cpu",
                        "--out", os.path.join(tmp, "run")], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        ckpt = os.path.join(tmp, "run", "model.ckpt")
        set_env = dict(env, OPENBLAS_NUM_THREADS="1", GOMP_SPINCOUNT="1000")
        commands = {
            "--version": (["--version"], env),
            "info": (["info", "--model", ckpt], env),
            "train --help": (["train", "--help"], env),
            "train --help (no restart)": (["train", "--help"], set_env),
            "train --device cuda": (["train", "--data", data, "--epochs", "1", "--device",
                                     "cuda"], env),
        }
        cases = {}
        for name, cpu, cuda in args.tree:
            for build, prog in (("cpu", cpu), ("cuda", cuda)):
                for cmd, (argv, cmd_env) in commands.items():
                    cases[(name, build, cmd)] = ([os.path.abspath(prog)] + argv, cmd_env)
        started = datetime.datetime.now(datetime.timezone.utc)
        load_before = os.getloadavg()
        programs = measure(cases, args.runs)

        helper = os.path.join(tmp, "dlopen_each")
        with open(helper + ".c", "w") as f:
            f.write(DLOPEN_C)
        subprocess.run(["cc", "-O2", "-o", helper, helper + ".c"], check=True)
        lib_cases = {"(none)": ([helper], env)}
        lib_cases.update({lib: ([helper, lib], env) for lib in libraries})
        libs = measure(lib_cases, args.runs)
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(tmp)

    cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                      if l.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    report = {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"), "commit": commit,
        "command": "python3 bench/startup.py " + " ".join(sys.argv[1:]),
        "cpu": cpu_model, "cores": os.cpu_count(), "runs": args.runs,
        "load_average_before": load_before, "load_average_after": load_after,
        "trees": [{"name": n, "cpu": c, "cuda": g} for n, c, g in args.tree],
        "programs": [{"tree": k[0], "build": k[1], "command": k[2], "median_ms": v[0],
                      "median_peak_rss_kb": v[1], "exit": v[2]} for k, v in programs.items()],
        "libraries": [{"library": k, "median_ms": v[0], "median_peak_rss_kb": v[1], "exit": v[2]}
                      for k, v in libs.items()],
    }
    with open(args.out + ".json", "w") as f:
        json.dump(report, f, indent=1)

    lines = [
        "# Start-up: a CUDA build against a CPU-only build", "",
        f"- Run: {report['date']}, commit {commit}, `{report['command']}`.",
        f"- Machine: {cpu_model}, {os.cpu_count()} cores, shared; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after.",
        f"- Each figure: the median of {args.runs} runs, the programs interleaved run by run. "
        "Time: spawn to exit, measured by the script. Memory: peak resident set (GNU time "
        "%M, a run of its own).", "",
        "| tree | command | CPU build | CUDA build | CUDA / CPU time | CPU build RSS | "
        "CUDA build RSS |", "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, _, _ in args.tree:
        for cmd in commands:
            c, g = programs[(name, "cpu", cmd)], programs[(name, "cuda", cmd)]
            shown = cmd.replace(" (no restart)", "` (settings set: no restart)")
            shown = shown if shown != cmd else cmd + "`"
            lines.append(f"| {name} | `cvae {shown} | {c[0]:.1f} ms (exit {c[2]}) | "
                         f"{g[0]:.1f} ms (exit {g[2]}) | {g[0] / c[0]:.2f} | "
                         f"{c[1] / 1024:.1f} MiB | {g[1] / 1024:.1f} MiB |")
    base = libs["(none)"]
    lines += ["", f"Each library loaded alone (dlopen RTLD_NOW with its dependencies), above "
              f"an empty program ({base[0]:.1f} ms, {base[1] / 1024:.1f} MiB):", "",
              "| library | time | resident memory |", "| --- | --- | --- |"]
    for lib in libraries:
        ms, kb, rc = libs[lib]
        extra = "" if rc == 0 else " (failed to load)"
        lines.append(f"| `{lib}`{extra} | {ms - base[0]:+.1f} ms | {(kb - base[1]) / 1024:+.1f} MiB |")
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
