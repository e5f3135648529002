#!/usr/bin/env python3
"""The cvae model spec (docs/design.md section 1) in PyTorch: the peer cvae is compared with.

Same architecture, nn.Linear initialisation (fan_in counts the one-hot columns), logvar
clamp, Bernoulli loss, Adam settings, seeded shuffling with the last partial batch kept,
and a test -ELBO from one z per image. It prints the same per-epoch figures as
`cvae train` and, with --metrics, the same JSON lines.

Modes (--mode): eager; compile (torch.compile of the whole batch step: gather, noise,
forward, backward, Adam); graph (the whole batch step captured once in a CUDA graph with
static buffers and replayed, as PyTorch's docs describe for whole-network capture, with
fused capturable Adam; the last partial batch of an epoch runs eagerly, as in cvae).
Precisions (--precision): fp32; tf32 (TF32 tensor cores for fp32 matmuls, CUDA only); bf16
(the layers under torch.autocast(dtype=torch.bfloat16); the loss terms in fp32).
--bench-steps N times N training steps after a warm-up instead of training epochs
(median step time; CUDA events on a GPU). --iwae K adds the importance-weighted
-log p(x|c) on the test set with K samples (timed). --binarize draws each batch's pixels as
Bernoulli(pixel/255) (the test set is taken as it is: give it binarized); --seconds S stops
training after the step that passes S seconds of training; --save-checkpoint FILE writes
the model as a cvae checkpoint (format version 4, docs/design.md 4.1; Adam's state 0), so
that cvae eval, generate and score take it. Runs on the CPU (Debian's python3-torch: eager
only, fp32 or bf16) or on CUDA with PyTorch 2.x.
"""
import argparse
import contextlib
import json
import math
import os
import statistics
import struct
import sys
import time
import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from idx import find, read_idx  # noqa: E402

LOGVAR_MIN, LOGVAR_MAX = -30.0, 30.0  # cv_math.h's clamp
LOG_2PI = math.log(2.0 * math.pi)
GRAPH_WARMUP_STEPS = 3  # eager steps on a side stream before capture (PyTorch's docs)


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

    # Under bf16 autocast the Linear layers run in bf16; the head and the logits come back
    # as fp32 (.float() is a no-op in fp32), so z, the KL and the likelihood are fp32.
    def encode(self, x, onehot):
        h = torch.cat([x, onehot], 1)
        for layer in self.enc:
            h = F.relu(layer(h))
        mu, s = self.head(h).float().chunk(2, dim=1)
        return mu, s.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def decode(self, z, onehot):
        g = torch.cat([z, onehot.to(z.dtype)], 1)
        for layer in self.dec:
            g = F.relu(layer(g))
        return self.out(g).float()

    def forward(self, x, c, eps):
        onehot = F.one_hot(c, self.classes).to(x.dtype)
        mu, s = self.encode(x, onehot)
        z = mu + torch.exp(0.5 * s) * eps
        logits = self.decode(z, onehot)
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(1)
        kl = 0.5 * (mu * mu + torch.exp(s) - 1.0 - s).sum(1)
        return rec, kl


def fail(msg):
    """One clear line on stderr and exit 2, as cvae does for an unusable device or flag."""
    print(f"torch_peer.py: {msg}", file=sys.stderr)
    sys.exit(2)


def check_request(args):
    """Refuses, with one line, what this PyTorch or machine cannot run."""
    try:
        dev = torch.device(args.device)
    except RuntimeError as e:
        fail(f"--device {args.device}: {e}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        fail(f"--device {args.device}: no usable CUDA GPU (torch {torch.__version__}, CUDA "
             f"{torch.version.cuda or 'not built in'}); the CUDA modes need one")
    if dev.type not in ("cpu", "cuda"):
        fail(f"--device {args.device}: only cpu and cuda are supported")
    if args.mode == "graph" and dev.type != "cuda":
        fail("--mode graph captures CUDA graphs: it needs --device cuda")
    if args.precision == "tf32" and dev.type != "cuda":
        fail("--precision tf32 selects TF32 tensor cores: it needs --device cuda")
    if args.mode == "compile" and not hasattr(torch, "compile"):
        fail(f"--mode compile needs torch.compile (PyTorch 2.x); this is torch "
             f"{torch.__version__}")
    return dev


def device_name(dev):
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU"


def make_optimizer(model, args, dev):
    kw = dict(lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    if dev.type == "cuda":
        kw["fused"] = True  # one kernel for the whole update
        if args.mode == "graph":
            kw["capturable"] = True  # the step count on the device, so a replay advances it
    return torch.optim.Adam(model.parameters(), **kw)


class Trainer:
    """One training step over rows `idx` of the device-resident data set, in the chosen
    mode. step(idx) returns the batch's (rec sum, kl sum) as device tensors."""

    def __init__(self, model, opt, xtr_d, ytr_d, args, dev):
        self.model, self.opt, self.xtr, self.ytr = model, opt, xtr_d, ytr_d
        self.latent, self.batch, self.dev = args.latent, args.batch, dev
        self.bf16 = args.precision == "bf16"
        self.mode = args.mode
        self.binarize = args.binarize
        self.graph = None
        self.steps_before_capture = GRAPH_WARMUP_STEPS if args.mode == "graph" else 0
        self.side = None
        body = self._body
        if args.mode == "compile":
            body = torch.compile(body, mode=args.compile_mode)
        self.body = body

    def autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        # autocast's cache of bf16 weight copies must be off inside a captured graph
        # (PyTorch's CUDA-graph notes): the cached copies would go stale between replays
        return torch.autocast(device_type=self.dev.type, dtype=torch.bfloat16,
                              cache_enabled=self.mode != "graph")

    def _body(self, idx, zero_grads):
        """Gather, noise, forward, backward and Adam. zero_grads: 'none' sets the
        gradients to None first, 'zero' zeroes them in place (the graph's own gradient
        buffers), 'skip' leaves them (inside the captured graph, backward writes them)."""
        if zero_grads == "none":
            self.opt.zero_grad(set_to_none=True)
        elif zero_grads == "zero":
            self.opt.zero_grad(set_to_none=False)
        x = self.xtr[idx].float() / 255.0
        if self.binarize:
            x = torch.bernoulli(x)
        c = self.ytr[idx]
        eps = torch.randn(idx.shape[0], self.latent, device=self.dev)
        with self.autocast():
            rec, kl = self.model(x, c, eps)
        loss = (rec + kl).mean()
        loss.backward()
        self.opt.step()
        return rec.detach().sum(), kl.detach().sum()

    def _capture(self):
        # the warm-up steps ran on a side stream; capture with the gradients unset, so that
        # backward allocates them from the graph's private pool (PyTorch's whole-network
        # capture recipe)
        torch.cuda.current_stream().wait_stream(self.side)
        self.static_idx = torch.zeros(self.batch, dtype=torch.int64, device=self.dev)
        self.opt.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_out = self._body(self.static_idx, "skip")

    def step(self, idx):
        if self.mode != "graph":
            return self.body(idx, "none")
        full = idx.shape[0] == self.batch
        if self.graph is None and full and self.steps_before_capture == 0:
            self._capture()
        if self.graph is not None and full:
            self.static_idx.copy_(idx)
            self.graph.replay()
            return self.static_out  # overwritten by the next replay, read in stream order
        if self.graph is None:  # a warm-up step, on the side stream
            if self.side is None:
                self.side = torch.cuda.Stream()
            self.side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side):
                out = self._body(idx, "none")
            torch.cuda.current_stream().wait_stream(self.side)
            self.steps_before_capture = max(0, self.steps_before_capture - 1)
            return out
        return self._body(idx, "zero")  # a partial batch after capture: eager


def iwae_nll(model, x_all, c_all, k, autocast, classes, dev, batch=500, max_rows=1 << 16):
    """-log p(x|c) with k importance samples per image (docs/design.md 1.11): log w =
    -rec + log p(z) - log q(z|x,c), log p_k = logsumexp_k log w - log k, averaged over
    the images; samples are drawn in chunks of up to max_rows decoded rows."""
    n = x_all.shape[0]
    total = torch.zeros((), dtype=torch.float64, device=dev)
    with torch.no_grad():
        for start in range(0, n, batch):
            x = x_all[start:start + batch]
            b = x.shape[0]
            onehot = F.one_hot(c_all[start:start + batch], classes).to(x.dtype)
            with autocast():
                mu, s = model.encode(x, onehot)
            chunk = max(1, min(k, max_rows // b))
            lws = []
            for k0 in range(0, k, chunk):
                m = min(chunk, k - k0)
                eps = torch.randn(m, b, mu.shape[1], device=dev)
                z = mu + torch.exp(0.5 * s) * eps  # (m, b, L)
                with autocast():
                    logits = model.decode(z.reshape(m * b, -1), onehot.repeat(m, 1))
                logits = logits.view(m, b, -1)
                rec = (logits.clamp(min=0) - logits * x + torch.log1p(torch.exp(-logits.abs()))).sum(-1)
                log_q = (-0.5 * (eps * eps + s + LOG_2PI)).sum(-1)
                log_p = (-0.5 * (z * z + LOG_2PI)).sum(-1)
                lws.append(-rec + log_p - log_q)
            lw = torch.cat(lws, 0).double()  # (k, b)
            total += (torch.logsumexp(lw, 0) - math.log(k)).sum()
    return -float(total) / n


def timed_steps(trainer, perm, args, dev):
    """--bench-steps: warm-up steps (graph capture included), then timed steps over full
    batches of the epoch order, cycling; each step's time from CUDA events recorded between
    steps on a GPU (no waits in between), from the clock on the CPU."""
    full = perm.shape[0] // args.batch
    if full == 0:
        fail(f"--bench-steps needs at least one full batch of {args.batch} rows")

    def idx(i):
        j = i % full
        return perm[j * args.batch:(j + 1) * args.batch]

    for i in range(args.warmup):
        trainer.step(idx(i))
    ms = []
    if dev.type == "cuda":
        torch.cuda.synchronize()
        events = [torch.cuda.Event(enable_timing=True) for _ in range(args.bench_steps + 1)]
        events[0].record()
        for i in range(args.bench_steps):
            trainer.step(idx(args.warmup + i))
            events[i + 1].record()
        torch.cuda.synchronize()
        ms = [events[i].elapsed_time(events[i + 1]) for i in range(args.bench_steps)]
    else:
        for i in range(args.bench_steps):
            t0 = time.perf_counter()
            trainer.step(idx(args.warmup + i))
            ms.append(1e3 * (time.perf_counter() - t0))
    med = statistics.median(ms)
    return {"steps": args.bench_steps, "warmup": args.warmup, "step_ms_median": med,
            "step_ms_min": min(ms), "step_ms_max": max(ms),
            "samples_per_s": args.batch / (med / 1e3)}


def save_checkpoint(path, model, args, dim, classes, hidden, side, steps, epochs):
    """The model as a cvae checkpoint of format version 4 (docs/design.md 4.1): each layer
    w (out, in), its condition table (K, out) for the first layers (the one-hot columns of
    nn.Linear's weight, transposed), b; Adam m and v 0; an ELBO run of a standard prior and
    the Bernoulli likelihood with this run's batch, lr, seed and binarization."""
    arrays = []
    layers = list(model.enc) + [model.head] + list(model.dec) + [model.out]
    firsts = {0, len(model.enc) + 1}
    for i, layer in enumerate(layers):
        w = layer.weight.detach().float().cpu().numpy()
        b = layer.bias.detach().float().cpu().numpy()
        if i in firsts:
            arrays += [w[:, :-classes].ravel(), w[:, -classes:].T.ravel()]
        else:
            arrays.append(w.ravel())
        arrays.append(b)
    params = np.concatenate(arrays).astype("<f4")
    n = params.size
    hid = hidden + [0] * (8 - len(hidden))
    fields = struct.pack("<5I8I2If", side, side, classes, args.latent, len(hidden), *hid, 0, 0,
                         0.1)
    fields += struct.pack("<QqiifI", args.seed, steps, epochs, args.batch, args.lr, 0)
    fields += struct.pack("<5d", 0, 0, 0, 0, 0)
    fields += struct.pack("<qfiiqfi", 0, 1.0, 0, 0, 0, 0.0, 1 if args.binarize else 0)
    fields += struct.pack("<2I", 1, 0)  # channels, class labels
    fields += struct.pack("<IIfIIi", 0, 1, 0.0, 1, 0, -1)  # version 4's objectives block
    fields += struct.pack("<Q", n)
    head = b"CVAECKPT" + struct.pack("<II", 4, len(fields)) + fields
    body = head + params.tobytes() + bytes(8 * n)
    with open(path + ".tmp", "wb") as f:
        f.write(body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF))
    os.replace(path + ".tmp", path)


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
    ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"])
    ap.add_argument("--mode", default="eager", choices=["eager", "compile", "graph"])
    ap.add_argument("--compile", action="store_true", help="the same as --mode compile")
    ap.add_argument("--compile-mode", default="default",
                    help="torch.compile's mode (default, reduce-overhead, max-autotune)")
    ap.add_argument("--metrics", help="one JSON object per epoch")
    ap.add_argument("--max-steps", type=int, default=0, help="stop each epoch after N steps")
    ap.add_argument("--bench-steps", type=int, default=0,
                    help="time N training steps (after --warmup) instead of training epochs")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps before --bench-steps")
    ap.add_argument("--iwae", type=int, default=0,
                    help="after training, the test IWAE -log p(x|c) with K samples, timed")
    ap.add_argument("--iwae-repeats", type=int, default=1,
                    help="evaluate the IWAE this many times; its time is their median")
    ap.add_argument("--binarize", action="store_true",
                    help="dynamic binarization of the training batches")
    ap.add_argument("--seconds", type=float, default=0,
                    help="stop training after this many seconds of it (0: the epochs)")
    ap.add_argument("--save-checkpoint", help="write the model as a cvae checkpoint")
    ap.add_argument("--json", action="store_true",
                    help="end with one JSON line: device, versions, epochs, bench, iwae")
    args = ap.parse_args()
    if args.compile:
        args.mode = "compile"
    dev = check_request(args)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if dev.type == "cuda":
        torch.set_float32_matmul_precision("high" if args.precision == "tf32" else "highest")
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
    opt = make_optimizer(model, args, dev)
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    trainer = Trainer(model, opt, xtr_d, ytr_d, args, dev)

    print(f"device: {dev} ({device_name(dev)}) torch {torch.__version__} threads "
          f"{torch.get_num_threads()} mode {args.mode} precision {args.precision}", flush=True)
    report = {"device": str(dev), "device_name": device_name(dev), "torch": torch.__version__,
              "cuda": torch.version.cuda, "mode": args.mode, "precision": args.precision,
              "hidden": hidden, "latent": args.latent, "batch": args.batch}

    if args.bench_steps:
        perm = torch.randperm(n, generator=gen).to(dev)
        report["bench"] = timed_steps(trainer, perm, args, dev)
        b = report["bench"]
        print(f"bench: {b['step_ms_median']:.4f} ms a step, the median of {b['steps']} steps "
              f"after {b['warmup']}: {b['samples_per_s']:.0f} samples/s", flush=True)
        args.epochs = 0

    lines = []
    trained, steps_done, epochs_done, out_of_time = 0.0, 0, 0, False
    for epoch in range(1, args.epochs + 1):
        if out_of_time:
            break
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen).to(dev)
        rec_sum = torch.zeros((), device=dev, dtype=torch.float64)
        kl_sum = torch.zeros((), device=dev, dtype=torch.float64)
        seen = 0
        for i, start in enumerate(range(0, n, args.batch)):
            if args.max_steps and i >= args.max_steps:
                break
            idx = perm[start:start + args.batch]
            r, k = trainer.step(idx)
            rec_sum += r
            kl_sum += k
            seen += idx.shape[0]
            steps_done += 1
            if args.seconds and trained + time.perf_counter() - t0 >= args.seconds:
                out_of_time = True
                break
        train_loss = float(rec_sum + kl_sum) / seen  # the host reads the sums once
        if dev.type == "cuda":
            torch.cuda.synchronize()
        train_seconds = time.perf_counter() - t0
        trained += train_seconds
        epochs_done = epoch if not out_of_time else epoch - 1
        rec_t = kl_t = None
        if xte is not None:
            with torch.no_grad(), trainer.autocast():
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
    report["epochs"] = [json.loads(line) for line in lines]
    report["train_seconds"], report["steps"] = trained, steps_done
    if args.save_checkpoint:
        save_checkpoint(args.save_checkpoint, model, args, dim, classes, hidden, xtr.shape[1],
                        steps_done, epochs_done)

    if args.iwae:
        if xte is None:
            fail(f"--iwae needs the t10k test files in {args.data}")
        x = torch.from_numpy(xte.reshape(-1, dim).copy()).to(dev).float() / 255.0
        c = torch.from_numpy(yte.astype(np.int64)).to(dev)
        times = []
        for _ in range(max(1, args.iwae_repeats)):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            nll = iwae_nll(model, x, c, args.iwae, trainer.autocast, classes, dev)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        seconds = statistics.median(times)
        report["iwae"] = {"k": args.iwae, "nll": nll, "seconds": seconds, "runs": times,
                          "images": x.shape[0]}
        print(f"test IWAE-{args.iwae} -log p(x|c) {nll:.4f} nats over {x.shape[0]} images in "
              f"{seconds:.3f} s (the median of {len(times)})", flush=True)
    if args.json:
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    sys.exit(main())
