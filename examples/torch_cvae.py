#!/usr/bin/env python3
"""A cvae model in PyTorch, built from the .safetensors file `cvae export` writes.

    cvae export --model runs/fashion/model.ckpt --format safetensors --out fashion.safetensors
    python3 examples/torch_cvae.py fashion.safetensors --samples samples.npy

CVAE.load(path) reads the file (with the `safetensors` package when it is installed, else
with NumPy) and builds the module from the configuration in its metadata: the same layers
as cvae (nn.Linear over [x, c] and [z, c], c a label's one-hot row or the condition
vector), so encode() and decode() give what `cvae encode` and `cvae decode` give, to float
rounding. Images are x = pixel / 255, flattened in (H, W, C) order.
"""
import argparse
import json
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_safetensors(path):
    """The tensors (name -> torch.Tensor) and the __metadata__ strings of a file."""
    try:
        from safetensors import safe_open
    except ImportError:
        safe_open = None
    if safe_open is not None:
        with safe_open(path, framework="pt") as f:
            return {name: f.get_tensor(name) for name in f.keys()}, f.metadata()
    with open(path, "rb") as f:  # the format: u64 header length, JSON header, raw data
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        data = f.read()
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, t in header.items():
        if t["dtype"] != "F32":
            raise ValueError(f"{path}: {name} is {t['dtype']}, not F32")
        begin, end = t["data_offsets"]
        array = np.frombuffer(data[begin:end], dtype="<f4").reshape(t["shape"])
        tensors[name] = torch.from_numpy(array.copy())
    return tensors, meta


class CVAE(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.dim = config["height"] * config["width"] * config["channels"]
        self.cond_width, self.latent = config["condition_width"], config["latent"]
        hidden = config["hidden"]
        sizes = [self.dim + self.cond_width] + hidden
        self.enc = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.head = nn.Linear(hidden[-1], 2 * self.latent)
        sizes = [self.latent + self.cond_width] + hidden[::-1]
        self.dec = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.out = nn.Linear(hidden[0], self.dim)
        if config["prior"] == "conditional":
            self.prior_mean = nn.Linear(self.cond_width, self.latent, bias=False)
            self.prior_logvar = nn.Linear(self.cond_width, self.latent, bias=False)

    @classmethod
    def load(cls, path):
        tensors, meta = read_safetensors(path)
        model = cls(json.loads(meta["cvae"]))
        model.load_state_dict(tensors)
        return model.eval()

    def condition(self, labels):
        """The condition rows of class labels: their one-hot vectors."""
        return F.one_hot(torch.as_tensor(labels).long(), self.cond_width).float()

    def clamp(self, logvar):
        return logvar.clamp(self.config["logvar_min"], self.config["logvar_max"])

    def encode(self, x, c):
        """q(z|x,c): mean and log-variance, (N, L) each."""
        h = torch.cat([x, c], 1)
        for layer in self.enc:
            h = F.relu(layer(h))
        mean, logvar = self.head(h).chunk(2, dim=1)
        return mean, self.clamp(logvar)

    def decode(self, z, c):
        """E[x|z,c]: the Bernoulli probabilities, or the Gaussian means, (N, D)."""
        g = torch.cat([z, c], 1)
        for layer in self.dec:
            g = F.relu(layer(g))
        return torch.sigmoid(self.out(g))

    def prior(self, c):
        """p(z|c): the standard normal, or the learned N(M c, diag exp(R c))."""
        if self.config["prior"] != "conditional":
            zeros = torch.zeros(c.shape[0], self.latent)
            return zeros, zeros
        return self.prior_mean(c), self.clamp(self.prior_logvar(c))

    def sample(self, c, generator=None):
        mean, logvar = self.prior(c)
        eps = torch.randn(mean.shape, generator=generator)
        return self.decode(mean + torch.exp(0.5 * logvar) * eps, c)


def main():
    ap = argparse.ArgumentParser(description="Load a cvae model exported as safetensors.")
    ap.add_argument("model", help="FILE.safetensors from cvae export")
    ap.add_argument("--samples", help="write one prior sample per class here (.npy)")
    args = ap.parse_args()
    model = CVAE.load(args.model)
    count = sum(p.numel() for p in model.parameters())
    print(f"{args.model}: {count} parameters; {json.dumps(model.config)}")
    if args.samples:
        if model.config["condition"] != "labels":
            ap.error("--samples draws one image per class: the model takes condition vectors")
        with torch.no_grad():
            c = model.condition(range(model.cond_width))
            x = model.sample(c, torch.Generator().manual_seed(0))
        shape = (model.config["height"], model.config["width"], model.config["channels"])
        np.save(args.samples, x.numpy().reshape((-1,) + shape))
        print(f"wrote {args.samples}: one sample per class, E[x|z,c] in [0, 1]")


if __name__ == "__main__":
    main()
