#!/usr/bin/env python3
"""Compares two pytorch-fid statistics files (`mu`, `sigma`; e.g. the same images' features
extracted on a GPU and on the CPU). Standard library only (no numpy on every machine): the .npz
is a zip of .npy files. Prints max |a - b| / max |b| for mu and sigma; exit 1 above the
tolerances (mu 1e-3, sigma 1e-2: f32 convolutions summed in another order through 94 layers).

Usage: compare_stats.py A.npz B.npz
"""
import ast
import sys
import zipfile
from array import array


def load_npy(z, name):
    raw = z.read(name + ".npy")
    assert raw[:6] == b"\x93NUMPY", name
    major = raw[6]
    hlen = int.from_bytes(raw[8:10], "little") if major == 1 else int.from_bytes(raw[8:12], "little")
    start = (10 if major == 1 else 12) + hlen
    header = ast.literal_eval(raw[(10 if major == 1 else 12):start].decode("latin1"))
    code = {"<f8": "d", "<f4": "f"}[header["descr"]]
    a = array(code)
    a.frombytes(raw[start:])
    return a


def rel(a, b):
    scale = max(abs(x) for x in b) or 1.0
    return max(abs(x - y) for x, y in zip(a, b)) / scale


def main():
    za, zb = zipfile.ZipFile(sys.argv[1]), zipfile.ZipFile(sys.argv[2])
    dm = rel(load_npy(za, "mu"), load_npy(zb, "mu"))
    ds = rel(load_npy(za, "sigma"), load_npy(zb, "sigma"))
    ok = dm <= 1e-3 and ds <= 1e-2
    print(f"{'PASS' if ok else 'FAIL'}: mu max rel diff {dm:.2e}, sigma max rel diff {ds:.2e}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
