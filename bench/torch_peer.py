#!/usr/bin/env python3
"""The cvae model spec (docs/design.md section 1) in PyTorch: the peer cvae is compared with.

Same architecture, nn.Linear initialisation (fan_in counts the one-hot columns), logvar
clamp, Bernoulli loss, Adam settings, seeded shuffling with the last partial batch kept,
and a test -ELBO from one z per image. It prints the same per-epoch figures as
`cvae train` and, with --metrics, the same JSON lines. Runs on the CPU (Debian's
python3-torch) or on CUDA with PyTorch 2.x (--device cuda, --compile, --cuda-graph).
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from idx import find, read_idx  # noqa: E402

LOGVAR_MIN, LOGVAR_MAX = -30.0, 30.0  # cv_math.h's clamp


class CVAE(nn.Module):
    def __init__(self, dim, classes, hidden, latent):
        super().__init__()
        self.classes, self.latent = classes, latent
        enc, prev = [], dim + classes
        for h in hidden:
            enc.append(nn.Linear(prev, h))
            prev = h
        self.enc = nn.ModuleList(enc)
        self.head = nn.Linear(prev, 2 * latent)
        dec, prev = [], latent + classes
        for h in reversed(hidden):
            dec.append(nn.Linear(prev, h))
            prev = h
        self.dec = nn.ModuleList(dec)
        self.out = nn.Linear(prev, dim)

    def forward(self, x, c, eps):
        onehot = F.one_hot(c, self.classes).to(x.dtype)
        h = torch.cat([x, onehot], 1)
        for layer in self.enc:
            h = F.relu(layer(h))
        mu, s = self.head(h).chunk(2, dim=1)
        s = s.clamp(LOGVAR_MIN, LOGVAR_MAX)
        z = mu + torch.exp(0.5 * s) * eps
        g = torch.cat([z, onehot], 1)
        for layer in self.dec:
            g = F.relu(layer(g))
        logits = self.out(g)
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
        kl = 0.5 * (mu * mu + torch.exp(s) - 1.0 - s).sum(1)
        return rec, kl


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--hidden", default="400")
    ap.add_argument("--latent", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32"])
    ap.add_argument("--compile", action="store_true", help="torch.compile the step")
    ap.add_argument("--metrics", help="one JSON object per epoch")
    ap.add_argument("--max-steps", type=int, default=0, help="stop each epoch after N steps")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.precision == "tf32"
    hidden = [int(h) for h in args.hidden.split(",")]

    xtr = read_idx(find(args.data, "train-images-idx3-ubyte"))
    ytr = read_idx(find(args.data, "train-labels-idx1-ubyte"))
    test_path = find(args.data, "t10k-images-idx3-ubyte")
    xte = read_idx(test_path) if test_path else None
    yte = read_idx(find(args.data, "t10k-labels-idx1-ubyte")) if test_path else None
    n, dim = xtr.shape[0], xtr.shape[1] * xtr.shape[2]
    classes = int(ytr.max()) + 1

    # the data set lives on the device as uint8, as in cvae
    xtr_d = torch.from_numpy(xtr.reshape(n, dim).copy()).to(dev)
    ytr_d = torch.from_numpy(ytr.astype(np.int64)).to(dev)
    model = CVAE(dim, classes, hidden, args.latent).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    gen = torch.Generator(device="cpu").manual_seed(args.seed)

    def step(x, c, eps):
        opt.zero_grad(set_to_none=True)
        rec, kl = model(x, c, eps)
        loss = (rec + kl).mean()
        loss.backward()
        opt.step()
        return rec.detach().sum(), kl.detach().sum()

    if args.compile:
        step = torch.compile(step)

    print(f"device: {dev} torch {torch.__version__} threads {torch.get_num_threads()}")
    lines = []
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen).to(dev)
        rec_sum = torch.zeros((), device=dev, dtype=torch.float64)
        kl_sum = torch.zeros((), device=dev, dtype=torch.float64)
        seen = 0
        for i, start in enumerate(range(0, n, args.batch)):
            if args.max_steps and i >= args.max_steps:
                break
            idx = perm[start:start + args.batch]
            x = xtr_d[idx].float() / 255.0
            c = ytr_d[idx]
            eps = torch.randn(x.shape[0], args.latent, device=dev)
            r, k = step(x, c, eps)
            rec_sum += r
            kl_sum += k
            seen += x.shape[0]
        train_loss = float(rec_sum + kl_sum) / seen  # the host reads the sums once
        if dev.type == "cuda":
            torch.cuda.synchronize()
        train_seconds = time.perf_counter() - t0
        rec_t = kl_t = None
        if xte is not None:
            with torch.no_grad():
                x = torch.from_numpy(xte.reshape(-1, dim).copy()).to(dev).float() / 255.0
                c = torch.from_numpy(yte.astype(np.int64)).to(dev)
                eval_gen = torch.Generator(device="cpu").manual_seed(args.seed + 1000003)
                eps = torch.randn(x.shape[0], args.latent, generator=eval_gen).to(dev)
                r, k = model(x, c, eps)
                rec_t, kl_t = float(r.mean()), float(k.mean())
        seconds = time.perf_counter() - t0
        rate = seen / train_seconds
        rec = {"epoch": epoch, "train_loss": train_loss,
               "test_neg_elbo": None if rec_t is None else rec_t + kl_t,
               "test_rec": rec_t, "test_kl": kl_t, "samples_per_s": rate, "seconds": seconds}
        lines.append(json.dumps(rec))
        test = "" if rec_t is None else f"  test_neg_elbo {rec_t + kl_t:9.4f} (rec {rec_t:9.4f}  kl {kl_t:8.4f})"
        print(f"epoch {epoch:3d}/{args.epochs}  train_loss {train_loss:9.4f}{test}  "
              f"{rate:8.0f} samples/s  {seconds:6.2f} s", flush=True)
        if args.metrics:
            tmp = args.metrics + ".tmp"
            with open(tmp, "w") as f:
                f.write("\n".join(lines) + "\n")
            os.replace(tmp, args.metrics)


if __name__ == "__main__":
    sys.exit(main())
