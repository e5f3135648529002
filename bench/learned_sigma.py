#!/usr/bin/env python3
"""A learned Gaussian sigma against a fixed one and the Bernoulli likelihood, on colour photographs.

The data: 6 classes of 32 x 32 RGB crops of real photographs, one photograph a class
(scikit-learn's china and flower, scikit-image's astronaut, coffee, chelsea and rocket:
Debian's python3-sklearn and python3-skimage ship them), crops at random places (train and
test from disjoint halves of each picture, so no test crop overlaps a training one), as
NumPy files. Three models of the same shape are trained the same epochs: --likelihood
bernoulli, --likelihood gaussian (sigma 0.1), and --likelihood gaussian --sigma learned.
Each is scored by `cvae score` (fidelity and CAS): their likelihoods' nats are not
comparable, the scores are. Results go to bench/results/learned_sigma.{md,json}.

usage: python3 bench/learned_sigma.py [--cvae BUILD/cvae] [--epochs 20] [--per-class 500]
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import skimage.data
from sklearn.datasets import load_sample_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDE = 32


def photographs():
    china, flower = load_sample_images().images
    return [("china", china), ("flower", flower), ("astronaut", skimage.data.astronaut()),
            ("coffee", skimage.data.coffee()), ("chelsea", skimage.data.chelsea()),
            ("rocket", skimage.data.rocket())]


def crops(picture, n, half, rng):
    """n random crops from the left (half 0) or right (half 1) half of the picture."""
    h, w, _ = picture.shape
    lo, hi = (0, w // 2 - SIDE) if half == 0 else (w // 2, w - SIDE)
    ys = rng.integers(0, h - SIDE + 1, n)
    xs = rng.integers(lo, hi + 1, n)
    return np.stack([picture[y:y + SIDE, x:x + SIDE] for y, x in zip(ys, xs)])


def write_data(folder, n_train, n_test, seed):
    rng = np.random.default_rng(seed)
    os.makedirs(folder)
    for split, n, half in (("train", n_train, 0), ("test", n_test, 1)):
        xs, ys = [], []
        for label, (_, picture) in enumerate(photographs()):
            xs.append(crops(picture, n, half, rng))
            ys.append(np.full(n, label, dtype=np.uint8))
        order = rng.permutation(sum(len(y) for y in ys))
        np.save(os.path.join(folder, f"{split}_images.npy"),
                np.ascontiguousarray(np.concatenate(xs)[order], dtype=np.uint8))
        np.save(os.path.join(folder, f"{split}_labels.npy"), np.concatenate(ys)[order])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cvae", default=os.path.join(ROOT, "build", "cvae"))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--hidden", default="512")
    ap.add_argument("--latent", type=int, default=32)
    ap.add_argument("--train-per-class", type=int, default=2000)
    ap.add_argument("--test-per-class", type=int, default=500)
    ap.add_argument("--per-class", type=int, default=500, help="generated images per class")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "learned_sigma"))
    args = ap.parse_args()
    variants = [("bernoulli", ["--likelihood", "bernoulli"]),
                ("gaussian, sigma 0.1", ["--likelihood", "gaussian", "--sigma", "0.1"]),
                ("gaussian, sigma learned", ["--likelihood", "gaussian", "--sigma", "learned"])]
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "photos")
        write_data(data, args.train_per_class, args.test_per_class, args.seed)
        for name, flags in variants:
            run = os.path.join(tmp, name.replace(" ", "").replace(",", "-"))
            t0 = time.time()
            log = subprocess.run([args.cvae, "train", "--data", data, "--hidden", args.hidden,
                                  "--latent", str(args.latent), "--epochs", str(args.epochs),
                                  "--seed", str(args.seed), "--device", "cpu", "--out", run,
                                  "--metrics", run + ".jsonl"] + flags,
                                 check=True, capture_output=True, text=True).stdout
            seconds = time.time() - t0
            last = json.loads(open(run + ".jsonl").read().strip().split("\n")[-1])
            score = json.loads(subprocess.run(
                [args.cvae, "score", "--model", os.path.join(run, "model.ckpt"), "--data", data,
                 "--per-class", str(args.per_class), "--seed", str(args.seed), "--device", "cpu",
                 "--json"], check=True, capture_output=True, text=True).stdout)
            rows.append({"variant": name, "flags": flags, "train_seconds": seconds,
                         "test_neg_elbo": last["test_neg_elbo"], "sigma": last.get("sigma"),
                         "active_units": last["active_units"], "score": score})
            print(f"{name}: fidelity {score['fidelity']:.4f} CAS {score['cas']:.4f} "
                  f"(ceiling {score['ceiling']:.4f}), sigma {last.get('sigma')}", flush=True)
            print(log.strip().split("\n")[-3], flush=True)
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    result = {"date": datetime.date.today().isoformat(), "commit": commit,
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "command": "python3 bench/learned_sigma.py " + " ".join(sys.argv[1:]),
              "epochs": args.epochs, "hidden": args.hidden, "latent": args.latent,
              "classes": [n for n, _ in photographs()], "runs": rows}
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=2)
    best = {k: max(rows, key=lambda r: r["score"][k])["variant"] for k in ("fidelity", "cas")}
    with open(args.out + ".md", "w") as f:
        f.write(f"# A learned Gaussian sigma on colour photographs\n\n{result['date']}, commit "
                f"{commit} (load average {load_before[0]:.2f} before, "
                f"{result['load_average_after'][0]:.2f} after). Command: "
                f"`{result['command']}`\n\n6 classes of 32 x 32 RGB crops, one photograph a "
                f"class ({', '.join(result['classes'])}), {args.train_per_class} training and "
                f"{args.test_per_class} test crops per class from disjoint halves of each "
                f"picture; hidden {args.hidden}, latent {args.latent}, {args.epochs} epochs, "
                f"seed {args.seed}; `cvae score` with {args.per_class} --mean images per class. "
                f"The likelihoods' nats are not comparable (a density against a probability); "
                f"the scores are.\n\n| likelihood | fidelity | CAS | ceiling | sigma at the end "
                f"| active units | test -ELBO (nats, not comparable) |\n|---|---|---|---|---|---|---|\n")
        for r in rows:
            s = r["score"]
            sigma = "" if r["sigma"] is None else f"{r['sigma']:.4f}"
            f.write(f"| {r['variant']} | {s['fidelity']:.4f} | {s['cas']:.4f} | "
                    f"{s['ceiling']:.4f} | {sigma} | {r['active_units']} | "
                    f"{r['test_neg_elbo']:.1f} |\n")
        f.write(f"\nBest fidelity: {best['fidelity']}; best CAS: {best['cas']}.\n")
    print(json.dumps(best))


if __name__ == "__main__":
    main()
