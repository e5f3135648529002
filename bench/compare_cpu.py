#!/usr/bin/env python3
"""cvae against the PyTorch peer (bench/torch_peer.py) on the same machine, in one run.

(a) agreement: both train the default model for --epochs epochs with --seeds seeds each;
    the test -ELBO of each, their means and spreads (max - min over seeds).
(b) throughput: training samples/s of one epoch, --repeats runs of each, interleaved so
    both see the same machine noise; medians and their ratio. The peer runs at each of
    --peer-threads and its fastest median is the one compared.
(c) the training step of each model of --shapes (hidden sizes:batch): `cvae bench
    --json` (the median step, and each kernel family's median time, share and percentage
    of its ceiling) against the peer's --bench-steps (the median step), --repeats runs
    of each, interleaved; medians and their ratio.

Both programs get the same OPENBLAS_CORETYPE (the one cvae picks for this CPU), so they
multiply matrices with the same OpenBLAS kernels. The CPU's model name, the kernels and
cvae's vector loops (its device line) and the load average before and after go into the
results: bench/results/cpu-<cpu>-<date>.json and .md unless --out says otherwise.

usage: python3 bench/compare_cpu.py [--data DIR] [--epochs 10] [--seeds 3] [--repeats 5]
                                    [--shapes "400:128 1024,1024:512"] [--bench-steps 200]
"""
import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_compare import cpu_name, slug  # noqa: E402  (the CPU's model name, a file-name form)


def run(cmd, env):
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return out


def metrics(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def shape_args(shape):
    """'1024,1024:512' -> ('1024,1024', '512')"""
    hidden, batch = shape.split(":")
    return hidden, batch


def cvae_bench(args, env, shape):
    hidden, batch = shape_args(shape)
    out = run([args.cvae, "bench", "--device", "cpu", "--hidden", hidden, "--batch", batch,
               "--steps", str(args.bench_steps), "--json"], env)
    return json.loads(out)


def peer_bench(args, env, shape, threads):
    hidden, batch = shape_args(shape)
    out = run([args.python, os.path.join(ROOT, "bench", "torch_peer.py"), "--data", args.data,
               "--hidden", hidden, "--batch", batch, "--threads", str(threads),
               "--bench-steps", str(args.bench_steps), "--json"], env)
    return json.loads(out.strip().splitlines()[-1])["bench"]


def cvae_run(args, env, seed, epochs, tmp):
    mpath = os.path.join(tmp, f"cvae-{seed}-{epochs}-{os.urandom(4).hex()}.jsonl")
    run([args.cvae, "train", "--data", args.data, "--epochs", str(epochs), "--seed", str(seed),
         "--device", "cpu", "--metrics", mpath], env)
    return metrics(mpath)


def peer_run(args, env, seed, epochs, threads, tmp):
    mpath = os.path.join(tmp, f"peer-{seed}-{epochs}-{os.urandom(4).hex()}.jsonl")
    run([args.python, os.path.join(ROOT, "bench", "torch_peer.py"), "--data", args.data,
         "--epochs", str(epochs), "--seed", str(seed), "--threads", str(threads),
         "--metrics", mpath], env)
    return metrics(mpath)


def agreement(quality):
    """The test -ELBO's mean and spread (max - min over seeds) of each program, the
    difference of the means, and whether it lies within the larger spread (None for one
    seed each: no spread to judge it by)."""
    spread = {k: max(v) - min(v) for k, v in quality.items()}
    mean = {k: statistics.mean(v) for k, v in quality.items()}
    diff = abs(mean["cvae"] - mean["peer"])
    several = all(len(v) > 1 for v in quality.values())
    return {"test_neg_elbo_mean": mean, "test_neg_elbo_spread": spread,
            "mean_difference": diff,
            "agree_within_spread": diff <= max(spread.values()) if several else None}


def summarize_steps(runs):
    """Medians of the samples/s and of each family's time, share and ceiling percentage."""
    med = {k: statistics.median(v) for k, v in runs.items()
           if k == "cvae" or k.startswith("peer")}
    best = max((k for k in med if k.startswith("peer")), key=lambda k: med[k])
    families = {}
    for fam in runs["families"][0]:
        name = fam["family"]
        rows = [next(x for x in fams if x["family"] == name) for fams in runs["families"]]
        families[name] = {key: statistics.median(r[key] for r in rows)
                          for key in ("ms_per_step", "share_pct", "rate", "ceiling_pct")}
        families[name]["rate_unit"] = fam["rate_unit"]
    ceilings = {key: statistics.median(c[key] for c in runs["ceilings"])
                for key in ("copy_gb_per_s", "gemm_tflop_per_s")}
    return {"samples_per_s_median": med, "fastest_peer": best,
            "ratio_cvae_over_fastest_peer": med["cvae"] / med[best], "families": families,
            "ceilings": ceilings}


def write_steps(f, shape, runs, summary, args):
    hidden, batch = shape_args(shape)
    med = summary["samples_per_s_median"]
    c = summary["ceilings"]
    f.write(f"\n## Training step: hidden {hidden}, batch {batch} (samples/s, {args.repeats} runs "
            f"each, the median of {args.bench_steps} steps a run)\n\n"
            "| program | runs | median |\n|---|---|---|\n")
    for k, v in runs.items():
        if k == "cvae" or k.startswith("peer"):
            f.write(f"| {k} | " + ", ".join(f"{x:.0f}" for x in v) + f" | {med[k]:.0f} |\n")
    f.write(f"\ncvae / fastest peer ({summary['fastest_peer']}): "
            f"{summary['ratio_cvae_over_fastest_peer']:.2f}x\n\n"
            f"cvae's kernel families (`cvae bench`; medians over the runs; ceilings: copy "
            f"{c['copy_gb_per_s']:.1f} GB/s, GEMM 2048^3 {c['gemm_tflop_per_s']:.3f} TFLOP/s):\n\n"
            "| family | time/step | share | achieved | % of ceiling |\n|---|---|---|---|---|\n")
    for name, fam in summary["families"].items():
        f.write(f"| {name} | {fam['ms_per_step'] * 1e3:.1f} us | {fam['share_pct']:.1f}% | "
                f"{fam['rate']:.3g} {fam['rate_unit']} | {fam['ceiling_pct']:.1f}% |\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--cvae", default=os.path.join(ROOT, "build", "cvae"))
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--peer-threads", default="1,2")
    ap.add_argument("--shapes", default="400:128 1024,1024:512",
                    help="models for (c), each HIDDEN:BATCH (HIDDEN as cvae's --hidden), "
                    "separated by spaces")
    ap.add_argument("--bench-steps", type=int, default=200)
    ap.add_argument("--out", help="results path without .json/.md "
                    "(default: bench/results/cpu-<cpu>-<date>)")
    args = ap.parse_args()
    cpu = cpu_name()
    today = datetime.date.today().isoformat()
    if not args.out:
        args.out = os.path.join(ROOT, "bench", "results", f"cpu-{slug(cpu)}-{today}")
    shapes = args.shapes.split()
    load_before = os.getloadavg()

    env = dict(os.environ)
    # the kernels cvae's own check picks on this CPU: read from its device line
    probe = subprocess.Popen([args.cvae, "train", "--data", args.data, "--epochs", "1",
                              "--device", "cpu"], env=env, stdout=subprocess.PIPE, text=True)
    line = probe.stdout.readline().strip()
    probe.kill()
    probe.wait()
    core = re.search(r"OpenBLAS (\w+) kernels", line).group(1)
    loops = re.search(r"kernels, ([\w-]+) loops", line)
    env["OPENBLAS_CORETYPE"] = core
    print(f"CPU: {cpu}, load average {load_before[0]:.2f}\ncvae device line: {line}\n"
          f"both run with OPENBLAS_CORETYPE={core}", flush=True)
    threads = [int(t) for t in args.peer_threads.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        quality = {"cvae": [], "peer": []}
        for seed in range(args.seeds):
            c = cvae_run(args, env, seed, args.epochs, tmp)[-1]
            p = peer_run(args, env, seed, args.epochs, threads[0], tmp)[-1]
            quality["cvae"].append(c["test_neg_elbo"])
            quality["peer"].append(p["test_neg_elbo"])
            print(f"seed {seed}: test -ELBO after {args.epochs} epochs: cvae "
                  f"{c['test_neg_elbo']:.4f}, peer {p['test_neg_elbo']:.4f}", flush=True)

        speed = {"cvae": []}
        speed.update({f"peer_threads{t}": [] for t in threads})
        for rep in range(args.repeats):
            speed["cvae"].append(cvae_run(args, env, rep, 1, tmp)[0]["samples_per_s"])
            for t in threads:
                speed[f"peer_threads{t}"].append(
                    peer_run(args, env, rep, 1, t, tmp)[0]["samples_per_s"])
            print(f"repeat {rep}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in speed.items()),
                  flush=True)

    # (c) the step of each shape: cvae bench against the peer's timed steps
    steps = {}
    for shape in shapes:
        runs = {"cvae": [], "families": []}
        runs.update({f"peer_threads{t}": [] for t in threads})
        for rep in range(args.repeats):
            b = cvae_bench(args, env, shape)
            runs["cvae"].append(b["samples_per_s"])
            runs["families"].append(b["families"])
            runs.setdefault("device", b["device"])
            runs.setdefault("ceilings", []).append(b["ceilings"])
            for t in threads:
                runs[f"peer_threads{t}"].append(peer_bench(args, env, shape, t)["samples_per_s"])
            print(f"{shape} repeat {rep}: " + ", ".join(
                f"{k} {v[-1]:.0f}" for k, v in runs.items() if k == "cvae" or k.startswith("peer")),
                flush=True)
        steps[shape] = runs

    med = {k: statistics.median(v) for k, v in speed.items()}
    best_peer = max((k for k in med if k.startswith("peer")), key=lambda k: med[k])
    agreed = agreement(quality)
    mean, spread = agreed["test_neg_elbo_mean"], agreed["test_neg_elbo_spread"]
    diff, agree = agreed["mean_difference"], agreed["agree_within_spread"]
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    load_after = os.getloadavg()
    step_summary = {shape: summarize_steps(runs) for shape, runs in steps.items()}
    result = {
        "date": today, "commit": commit,
        "command": "python3 bench/compare_cpu.py " + " ".join(sys.argv[1:]),
        "machine": f"{cpu}, {os.cpu_count()} cores", "cpu": cpu,
        "load_average_before": load_before, "load_average_after": load_after,
        "device_line": line, "cvae_loops": loops.group(1) if loops else None,
        "openblas_coretype": core, "epochs": args.epochs,
        "test_neg_elbo": quality, "test_neg_elbo_mean": mean, "test_neg_elbo_spread": spread,
        "mean_difference": diff, "agree_within_spread": agree,
        "samples_per_s": speed, "samples_per_s_median": med, "fastest_peer": best_peer,
        "ratio_cvae_over_fastest_peer": med["cvae"] / med[best_peer],
        "bench_steps": args.bench_steps, "steps": steps, "steps_summary": step_summary,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=2)
    with open(args.out + ".md", "w") as f:
        f.write(f"# cvae vs PyTorch on the CPU\n\n{result['date']}, commit {commit}, "
                f"{result['machine']}, OPENBLAS_CORETYPE={core} for both; cvae's device line: "
                f"`{line}`.\nLoad average (1, 5, 15 min): "
                + ", ".join(f"{x:.2f}" for x in load_before) + " before, "
                + ", ".join(f"{x:.2f}" for x in load_after) + " after.\n"
                f"Command: `{result['command']}`\n\n")
        f.write(f"## Test -ELBO after {args.epochs} epochs (nats, Fashion-MNIST)\n\n"
                "| | " + " | ".join(f"seed {s}" for s in range(args.seeds)) +
                " | mean | spread |\n|---|" + "---|" * (args.seeds + 2) + "\n")
        for k in ("cvae", "peer"):
            f.write(f"| {k} | " + " | ".join(f"{v:.4f}" for v in quality[k]) +
                    f" | {mean[k]:.4f} | {spread[k]:.4f} |\n")
        verdict = ("one seed each, so no spread to judge it by" if agree is None else
                   f"{'within' if agree else 'OUTSIDE'} the larger spread")
        f.write(f"\nDifference of means {diff:.4f}: {verdict}.\n\n")
        f.write(f"## Training throughput (samples/s, one epoch, {args.repeats} runs each)\n\n"
                "| program | runs | median |\n|---|---|---|\n")
        for k, v in speed.items():
            f.write(f"| {k} | " + ", ".join(f"{x:.0f}" for x in v) + f" | {med[k]:.0f} |\n")
        f.write(f"\ncvae / fastest peer ({best_peer}): "
                f"{result['ratio_cvae_over_fastest_peer']:.2f}x\n")
        for shape, summary in step_summary.items():
            write_steps(f, shape, steps[shape], summary, args)
    print(json.dumps({k: result[k] for k in ("test_neg_elbo_mean", "test_neg_elbo_spread",
                                             "agree_within_spread", "samples_per_s_median",
                                             "ratio_cvae_over_fastest_peer")}, indent=1))


if __name__ == "__main__":
    main()
