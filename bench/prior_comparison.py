#!/usr/bin/env python3
"""Conditional prior against the standard prior, same budget, on binarized data.

For each prior and seed: `cvae train --binarize --prior P --seed S` for --epochs epochs,
then `cvae eval --iwae K --json` on the test set (binarized once with cvae's fixed seed).
Reports the test IWAE-K NLL, the -ELBO and the active units of each run, and the mean and
standard deviation over seeds, as JSON and a markdown table in bench/results/.

usage: python3 bench/prior_comparison.py [--data DIR] [--epochs 10] [--seeds 3] [--iwae 1000]
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--cvae", default=os.path.join(ROOT, "build", "cvae"))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--iwae", type=int, default=1000)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "prior_comparison"))
    args = ap.parse_args()

    runs = {"standard": [], "conditional": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for prior in runs:
                run = os.path.join(tmp, f"{prior}-{seed}")
                t0 = time.time()
                subprocess.run([args.cvae, "train", "--data", args.data, "--binarize",
                                "--prior", prior, "--seed", str(seed), "--epochs",
                                str(args.epochs), "--device", "cpu", "--out", run],
                               check=True, stdout=subprocess.DEVNULL)
                t1 = time.time()
                out = subprocess.run([args.cvae, "eval", "--model",
                                      os.path.join(run, "model.ckpt"), "--data", args.data,
                                      "--iwae", str(args.iwae), "--json", "--device", "cpu"],
                                     check=True, capture_output=True, text=True).stdout
                r = json.loads(out)
                r.update(seed=seed, train_seconds=t1 - t0, eval_seconds=time.time() - t1)
                del r["kl_per_dim"]
                runs[prior].append(r)
                print(f"{prior:11s} seed {seed}: IWAE-{args.iwae} NLL {r['iwae_nll']:.3f}, "
                      f"-ELBO {r['test_neg_elbo']:.3f}, active units {r['active_units']}",
                      flush=True)

    summary = {}
    for prior, rs in runs.items():
        nll = [r["iwae_nll"] for r in rs]
        summary[prior] = {"iwae_nll_mean": statistics.mean(nll),
                          "iwae_nll_std": statistics.stdev(nll) if len(nll) > 1 else 0.0,
                          "neg_elbo_mean": statistics.mean(r["test_neg_elbo"] for r in rs)}
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    result = {"date": datetime.date.today().isoformat(), "commit": commit,
              "command": "python3 bench/prior_comparison.py " + " ".join(sys.argv[1:]),
              "data": args.data, "epochs": args.epochs, "iwae_k": args.iwae,
              "runs": runs, "summary": summary}
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=2)
    with open(args.out + ".md", "w") as f:
        f.write(f"# Conditional vs standard prior, binarized data\n\n{result['date']}, commit "
                f"{commit}, CPU. Command: `{result['command']}`\n\nEach run: "
                f"`cvae train --binarize --prior P --seed S --epochs {args.epochs}` (hidden "
                f"400, latent 20, batch 128, lr 1e-3), then `cvae eval --iwae {args.iwae}` on "
                "the test set binarized with cvae's fixed seed. Nats per image.\n\n"
                f"| prior | seed | IWAE-{args.iwae} NLL | -ELBO | active units |\n"
                "|---|---|---|---|---|\n")
        for prior, rs in runs.items():
            for r in rs:
                f.write(f"| {prior} | {r['seed']} | {r['iwae_nll']:.3f} | "
                        f"{r['test_neg_elbo']:.3f} | {r['active_units']} |\n")
        f.write("\n| prior | IWAE NLL mean ± std over seeds | -ELBO mean |\n|---|---|---|\n")
        for prior, sm in summary.items():
            f.write(f"| {prior} | {sm['iwae_nll_mean']:.3f} ± {sm['iwae_nll_std']:.3f} | "
                    f"{sm['neg_elbo_mean']:.3f} |\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
