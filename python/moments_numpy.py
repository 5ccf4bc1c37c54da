#!/usr/bin/python3
"""The NumPy baseline of gvdb's query benchmark (issue: query speed).

Computes, for each snapshot exported by `gvdb export` (a directory of .npy
files and manifest.json), what

    SELECT variance(B), nvar(B), gns FROM run

computes, the way a user would with NumPy on the exported factors: the
mean gradient by A^T Delta, the per-coordinate second moment by
(A*A)^T (Delta*Delta), and |g_i|^2 = |a_i|^2 |d_i|^2 -- the same algebra
gvdb uses, on NumPy's BLAS. It prints one line per snapshot and, last,
"seconds <t>": the time to load and compute everything.

Run with Debian's interpreter, which has python3-numpy:

    /usr/bin/python3 python/moments_numpy.py --batch 128 DIR [DIR ...]
"""
import json
import os
import sys
import time

try:
    import numpy as np
except ImportError:
    sys.stderr.write("moments_numpy.py: NumPy is missing: install python3-numpy and run /usr/bin/python3\n")
    sys.exit(3)


def moments(d):
    """Returns N, D, sum (vector), sumsq (vector), sum of |g_i|^2."""
    man = json.load(open(os.path.join(d, "manifest.json")))
    n = man["examples"]
    sums, sumsqs, sqnorm = [], [], 0.0
    for layer in man["layers"]:
        f = layer["files"]
        if "A" in f:
            a = np.load(os.path.join(d, f["A"])).astype(np.float64)
            dl = np.load(os.path.join(d, f["Delta"])).astype(np.float64)
            if a.shape[1] != 1:
                raise SystemExit("moments_numpy.py: only T = 1 factored layers")
            a, dl = a[:, 0, :], dl[:, 0, :]
            sums.append((a.T @ dl).ravel())
            sumsqs.append(((a * a).T @ (dl * dl)).ravel())
            sqnorm += float(((a * a).sum(1) * (dl * dl).sum(1)).sum())
        else:
            r = np.load(os.path.join(d, f["rows"])).astype(np.float64)
            sums.append(r.sum(0))
            sumsqs.append((r * r).sum(0))
            sqnorm += float((r * r).sum())
    return n, np.concatenate(sums), np.concatenate(sumsqs), sqnorm


def main(argv):
    batch = 128
    if len(argv) > 2 and argv[1] == "--batch":
        batch, argv = int(argv[2]), argv[:1] + argv[3:]
    if len(argv) < 2:
        raise SystemExit(__doc__)
    start = time.perf_counter()
    for d in argv[1:]:
        n, s, sq, sqnorm = moments(d)
        dim = s.size
        mu = s / n
        total = max(sqnorm / n - float(mu @ mu), 0.0)
        v = np.maximum(sq / n - mu * mu, 0.0) / batch
        den = mu * mu + v
        nvar = float(np.where(den > 0, v / np.where(den > 0, den, 1), 0).sum()) / dim
        print(f"{d} variance {total / (batch * dim):.17g} nvar {nvar:.17g} gns {total / float(mu @ mu):.17g}")
    print(f"seconds {time.perf_counter() - start:.6f}")


if __name__ == "__main__":
    main(sys.argv)
