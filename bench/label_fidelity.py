#!/usr/bin/env python3
"""Label fidelity of generated data: do generated images look like their labels?

Fits a logistic regression on the real training set, then reports its accuracy on the
real test set and on a generated set of --per-class images of each class from a model
cvae trained for --epochs epochs (both pixel modes: the decoder's mean and Bernoulli
samples). A generated accuracy near the real one means the labels carry their class.
Needs Debian's python3-sklearn and python3-numpy. Results go to bench/results/.

usage: python3 bench/label_fidelity.py [--data DIR] [--epochs 10] [--per-class 1000]
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
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from idx import read_split  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(dirname, prefix):
    x, y = read_split(dirname, prefix)
    return x.reshape(len(x), -1).astype(np.float32) / 255.0, y


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--cvae", default=os.path.join(ROOT, "build", "cvae"))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--per-class", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "label_fidelity"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run = os.path.join(tmp, "run")
        subprocess.run([args.cvae, "train", "--data", args.data, "--epochs", str(args.epochs),
                        "--seed", str(args.seed), "--out", run], check=True)
        generated = {}
        for mode in ("mean", "sample"):
            out = os.path.join(tmp, mode)
            subprocess.run([args.cvae, "generate", "--model", os.path.join(run, "model.ckpt"),
                            "--per-class", str(args.per_class), "--out", out, "--format", "npy",
                            f"--{mode}", "--seed", str(args.seed)], check=True)
            generated[mode] = (np.load(os.path.join(out, "images.npy")),
                               np.load(os.path.join(out, "labels.npy")))

    xtr, ytr = load(args.data, "train")
    xte, yte = load(args.data, "t10k")
    t0 = time.time()
    clf = LogisticRegression(max_iter=200)
    clf.fit(xtr, ytr)
    print(f"logistic regression fitted on {len(xtr)} real images in {time.time() - t0:.0f} s")
    acc = {"real_test": float((clf.predict(xte) == yte).mean())}
    for mode, (x, y) in generated.items():
        pred = clf.predict(x.reshape(len(x), -1).astype(np.float32) / 255.0)
        acc[f"generated_{mode}"] = float((pred == y).mean())
        per_class = {int(c): float((pred[y == c] == c).mean()) for c in np.unique(y)}
        acc[f"generated_{mode}_per_class"] = per_class
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    result = {"date": datetime.date.today().isoformat(), "commit": commit,
              "command": "python3 bench/label_fidelity.py " + " ".join(sys.argv[1:]),
              "epochs": args.epochs, "per_class": args.per_class, "accuracy": acc}
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=2)
    with open(args.out + ".md", "w") as f:
        f.write(f"# Label fidelity\n\n{result['date']}, commit {commit}. Command: "
                f"`{result['command']}`\n\nLogistic regression trained on the real training "
                f"set; accuracy on:\n\n| set | accuracy |\n|---|---|\n"
                f"| real test set (10,000 images) | {acc['real_test']:.4f} |\n")
        for mode in generated:
            f.write(f"| generated, {mode} pixels ({args.per_class} per class, model trained "
                    f"{args.epochs} epochs) | {acc[f'generated_{mode}']:.4f} |\n")
        f.write("\nPer class (generated, mean pixels): " + ", ".join(
            f"{c}: {v:.3f}" for c, v in acc["generated_mean_per_class"].items()) + "\n")
    print(json.dumps(acc, indent=1))


if __name__ == "__main__":
    main()
