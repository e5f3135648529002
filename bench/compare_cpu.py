#!/usr/bin/env python3
"""cvae against the PyTorch peer (bench/torch_peer.py) on the same machine, in one run.

(a) agreement: both train the default model for --epochs epochs with --seeds seeds each;
    the test -ELBO of each, their means and spreads (max - min over seeds).
(b) throughput: training samples/s of one epoch, --repeats runs of each, interleaved so
    both see the same machine noise; medians and their ratio. The peer runs at each of
    --peer-threads and its fastest median is the one compared.

Both programs get the same OPENBLAS_CORETYPE (the one cvae picks for this CPU), so they
multiply matrices with the same OpenBLAS kernels. Results go to bench/results/ as JSON
and a markdown table.

usage: python3 bench/compare_cpu.py [--data DIR] [--epochs 10] [--seeds 3] [--repeats 5]
"""
import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, env):
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return out


def metrics(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--cvae", default=os.path.join(ROOT, "build", "cvae"))
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--peer-threads", default="1,2")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "cpu"))
    args = ap.parse_args()

    env = dict(os.environ)
    # the kernels cvae's own check picks on this CPU: read from its device line
    probe = subprocess.Popen([args.cvae, "train", "--data", args.data, "--epochs", "1",
                              "--device", "cpu"], env=env, stdout=subprocess.PIPE, text=True)
    line = probe.stdout.readline().strip()
    probe.kill()
    probe.wait()
    core = re.search(r"OpenBLAS (\w+) kernels", line).group(1)
    env["OPENBLAS_CORETYPE"] = core
    print(f"cvae device line: {line}\nboth run with OPENBLAS_CORETYPE={core}", flush=True)
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

    med = {k: statistics.median(v) for k, v in speed.items()}
    best_peer = max((k for k in med if k.startswith("peer")), key=lambda k: med[k])
    spread = {k: max(v) - min(v) for k, v in quality.items()}
    mean = {k: statistics.mean(v) for k, v in quality.items()}
    diff = abs(mean["cvae"] - mean["peer"])
    agree = diff <= max(spread.values())
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    result = {
        "date": datetime.date.today().isoformat(), "commit": commit,
        "command": "python3 bench/compare_cpu.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "openblas_coretype": core, "epochs": args.epochs,
        "test_neg_elbo": quality, "test_neg_elbo_mean": mean, "test_neg_elbo_spread": spread,
        "mean_difference": diff, "agree_within_spread": agree,
        "samples_per_s": speed, "samples_per_s_median": med, "fastest_peer": best_peer,
        "ratio_cvae_over_fastest_peer": med["cvae"] / med[best_peer],
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=2)
    with open(args.out + ".md", "w") as f:
        f.write(f"# cvae vs PyTorch on the CPU\n\n{result['date']}, commit {commit}, "
                f"{result['machine']}, OPENBLAS_CORETYPE={core} for both.\n"
                f"Command: `{result['command']}`\n\n")
        f.write(f"## Test -ELBO after {args.epochs} epochs (nats, Fashion-MNIST)\n\n"
                "| | " + " | ".join(f"seed {s}" for s in range(args.seeds)) +
                " | mean | spread |\n|---|" + "---|" * (args.seeds + 2) + "\n")
        for k in ("cvae", "peer"):
            f.write(f"| {k} | " + " | ".join(f"{v:.4f}" for v in quality[k]) +
                    f" | {mean[k]:.4f} | {spread[k]:.4f} |\n")
        f.write(f"\nDifference of means {diff:.4f}: "
                f"{'within' if agree else 'OUTSIDE'} the larger spread.\n\n")
        f.write(f"## Training throughput (samples/s, one epoch, {args.repeats} runs each)\n\n"
                "| program | runs | median |\n|---|---|---|\n")
        for k, v in speed.items():
            f.write(f"| {k} | " + ", ".join(f"{x:.0f}" for x in v) + f" | {med[k]:.0f} |\n")
        f.write(f"\ncvae / fastest peer ({best_peer}): "
                f"{result['ratio_cvae_over_fastest_peer']:.2f}x\n")
    print(json.dumps({k: result[k] for k in ("test_neg_elbo_mean", "test_neg_elbo_spread",
                                             "agree_within_spread", "samples_per_s_median",
                                             "ratio_cvae_over_fastest_peer")}, indent=1))


if __name__ == "__main__":
    main()
