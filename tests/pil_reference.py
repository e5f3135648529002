#!/usr/bin/env python3
"""Reference decodes for tests/test_image.c (jpeg_decode_and_resize_match_pil): writes N
CelebA-sized JPEGs (178 x 218, quality 90, photo-like: shading, sharp-edged shapes, fine
texture, noise) into OUT and what PIL (Debian's python3-pil, on the same libjpeg-turbo)
makes of them:

  ref_area.npy   float32 (N, 64, 64, 3): PIL's decode, the centred 178 x 178 square, and
                 its exact area average to 64 x 64 (PIL's own BOX filter weighs each pixel
                 whose centre falls in an area as 1, which is not an area average)
  ref_half.npy   uint8 (N, 109, 89, 3): PIL's decode and Image.reduce(2), the exact 2 x 2
                 mean
  ref_grey.npy   uint8 (N, 109, 89): PIL's convert("L") and reduce(2)

usage: pil_reference.py OUT N
"""
import os
import sys

import numpy as np
from PIL import Image

H, W = 218, 178


def photo(rng):
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    img = np.empty((H, W, 3))
    for c in range(3):
        img[..., c] = rng.uniform(40, 200) + rng.uniform(-0.6, 0.6) * (xx - W / 2) + \
            rng.uniform(-0.6, 0.6) * (yy - H / 2)
    for _ in range(5):
        inside = ((yy - rng.uniform(0, H)) / rng.uniform(10, 70)) ** 2 + \
                 ((xx - rng.uniform(0, W)) / rng.uniform(10, 60)) ** 2 < 1
        img[inside] = 0.4 * img[inside] + 0.6 * rng.uniform(0, 255, 3)
    img += 6 * np.sin(rng.uniform(0.3, 1.2) * xx + rng.uniform(0.3, 1.2) * yy)[..., None]
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def area_matrix(n, m):
    a = np.zeros((m, n))
    for i in range(m):
        lo, hi = i * n / m, (i + 1) * n / m
        for j in range(int(lo), min(n, int(np.ceil(hi)))):
            a[i, j] = max(0.0, min(hi, j + 1) - max(lo, j))
    return a * m / n


def main():
    out, n = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(20)
    a = area_matrix(W, 64)
    area, half, grey = [], [], []
    for i in range(n):
        path = os.path.join(out, f"{i:03d}.jpg")
        Image.fromarray(photo(rng)).save(path, quality=90)
        im = Image.open(path).convert("RGB")
        x = np.asarray(im, np.float64)[(H - W) // 2:(H - W) // 2 + W]
        area.append(np.einsum("ij,jkc->ikc", a, np.einsum("jkc,lk->jlc", x, a)))
        half.append(np.asarray(im.reduce(2)))
        grey.append(np.asarray(Image.open(path).convert("L").reduce(2)))
    np.save(os.path.join(out, "ref_area.npy"), np.array(area, np.float32))
    np.save(os.path.join(out, "ref_half.npy"), np.array(half, np.uint8))
    np.save(os.path.join(out, "ref_grey.npy"), np.array(grey, np.uint8))


if __name__ == "__main__":
    main()
