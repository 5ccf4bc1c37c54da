#!/usr/bin/python3
"""Capture overhead: one training step of the same PyTorch model, plain
against with gvdb_capture (hooks and the factors in memory: "capture";
and with the snapshot also written to disk: "capture+write"), measured in one run, alternating.

    /usr/bin/python3 python/bench_capture.py [--steps 20] [--batch 128] [--widths 784,1024,1024,10]
"""
import argparse
import os
import sys
import tempfile
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gvdb_capture import Capture  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--widths", default="784,1024,1024,10")
    args = ap.parse_args()
    w = [int(x) for x in args.widths.split(",")]
    layers = []
    for i in range(len(w) - 1):
        layers.append(nn.Linear(w[i], w[i + 1]))
        if i < len(w) - 2:
            layers.append(nn.ReLU(inplace=True))
    torch.manual_seed(0)
    model = nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    n = 4096
    x, y = torch.randn(n, w[0]), torch.randint(0, w[-1], (n,))
    times = {"plain": [], "capture": [], "capture+write": []}
    with tempfile.TemporaryDirectory() as tmp:
        cap = Capture(model, os.path.join(tmp, "run"), loss_reduction="mean", batch_size=args.batch)

        write = cap._write

        def factors_only(step, ids, population, attributes):
            # the factors in memory, as the written snapshot holds them, not saved
            for layer in cap.layers:
                a = torch.cat([c[0] for c in layer.calls], dim=1)
                d = torch.cat([c[1] for c in layer.calls], dim=1) * len(ids)
                a.numpy().copy(), d.numpy().copy(), d.sum(dim=1).numpy()
                layer.calls = []

        def step(kind, s):
            ids = torch.randperm(n)[:args.batch]
            t0 = time.perf_counter()
            if kind == "plain":
                ctx = cap.off()
            else:
                ctx = cap.snapshot(s, ids)
            cap._write = factors_only if kind == "capture" else write
            with ctx:
                loss = F.cross_entropy(model(x[ids]), y[ids])
                opt.zero_grad()
                loss.backward()
            opt.step()
            return time.perf_counter() - t0

        for s in range(3):  # warm-up
            step("plain", s)
            step("capture+write", 10**6 + s)
        s = 0
        for _ in range(args.steps):
            for kind in times:
                s += 1
                times[kind].append(step(kind, s))
        cap.close()
    med = {k: sorted(v)[len(v) // 2] * 1000 for k, v in times.items()}
    print(f"MLP {args.widths}, batch {args.batch}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.steps} steps each, interleaved:")
    for k, v in med.items():
        print(f"  {k:14s} {v:8.1f} ms/step  ({v / med['plain']:.2f}x plain)")


if __name__ == "__main__":
    main()
