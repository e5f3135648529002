"""IDX files (MNIST layout, plain or gzip) as numpy arrays, for the bench scripts."""
import gzip
import os

import numpy as np


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndims = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndims).reshape(dims)


def read_split(dirname, prefix):
    """The images (N, H, W) and labels (N,) of DIR/PREFIX-{images-idx3,labels-idx1}-ubyte
    (or .gz), as uint8 arrays; exits with one line when a file is missing."""
    def pick(name):
        path = find(dirname, name)
        if path is None:
            raise SystemExit(f"{dirname}: no {name}[.gz]")
        return path
    return read_idx(pick(f"{prefix}-images-idx3-ubyte")), read_idx(pick(f"{prefix}-labels-idx1-ubyte"))


def find(dirname, name):
    """DIR/NAME or DIR/NAME.gz, whichever exists, else None."""
    for candidate in (name, name + ".gz"):
        path = os.path.join(dirname, candidate)
        if os.path.exists(path):
            return path
    return None
