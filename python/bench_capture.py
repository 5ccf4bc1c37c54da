#!/usr/bin/python3
"""Capture overhead: one training step of the same PyTorch model, plain
against with gvdb_capture, measured in one run, steps interleaved (median
milliseconds per step).

    /usr/bin/python3 python/bench_capture.py [--model mlp] [--steps 20] [--batch 128] [--widths 784,1024,1024,10]
    /usr/bin/python3 python/bench_capture.py --model transformer [--batch 64]
    /usr/bin/python3 python/bench_capture.py --model resnet [--batch 64]
    /usr/bin/python3 python/bench_capture.py --model scaling [--batches 16,32,64,128]

--clock cpu times each step by this process's CPU time instead of the
elapsed time (steadier where other programs share the cores).

mlp: an MLP. transformer: a small transformer classifier
(embedding, free positional parameter, 2 encoder layers, linear head):
plain against capture with the fast hooks only (attention and the
positional parameter frozen, in both) and with the generic path included
(every parameter trained), with the positional parameter on the model
itself and in a module of its own. resnet: a ResNet-style CNN with BatchNorm in
eval mode for the snapshot's pass (as for the plain step). scaling: the
transformer's generic path (positional parameter in a module of its own)
at several batch sizes. Every capture step
writes its snapshot.
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


class AddPosition(nn.Module):
    """A free positional parameter in a module of its own: the generic path
    re-runs only this module (x + pos), not the whole model."""

    def __init__(self, seq, dim):
        super().__init__()
        self.pos = nn.Parameter(0.02 * torch.randn(1, seq, dim))

    def forward(self, x):
        return x + self.pos


class Transformer(nn.Module):
    def __init__(self, vocab=1000, dim=64, seq=32, layers=2, heads=4, classes=10, position_module=False):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        if position_module:
            self.position = AddPosition(seq, dim)
        else:
            self.pos = nn.Parameter(0.02 * torch.randn(1, seq, dim))
        self.enc = nn.ModuleList(nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True)
                                 for _ in range(layers))
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens):
        h = self.position(self.emb(tokens)) if hasattr(self, "position") else self.emb(tokens) + self.pos
        for layer in self.enc:
            h = layer(h)
        return self.head(h.mean(dim=1))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class ResNet(nn.Module):
    """conv-BN stem, a residual block at 16 channels (32x32), a strided
    conv to 32 channels and a block at 16x16, global pooling, linear head."""

    def __init__(self, classes=10):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.block1 = Block(16)
        self.down, self.bn_down = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32)
        self.block2 = Block(32)
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        h = self.block1(F.relu(self.bn(self.stem(x))))
        h = self.block2(F.relu(self.bn_down(self.down(h))))
        return self.fc(h.mean(dim=(2, 3)))


def mlp(widths):
    layers = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


CLOCK = time.perf_counter


def measure(model, x, y, batch, steps, kinds, tmp, name, eval_pass=False):
    """Median ms per step of each kind ("plain" or "capture", which writes
    the snapshot), interleaved."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    n = x.shape[0]
    cap = Capture(model, os.path.join(tmp, name), loss_reduction="mean", batch_size=batch, overwrite=True)
    times = {k: [] for k in kinds}
    s = [0]

    def step(kind):
        ids = torch.randperm(n)[:batch]
        s[0] += 1
        if eval_pass:
            model.eval()
        t0 = CLOCK()
        with cap.off() if kind == "plain" else cap.snapshot(s[0], ids):
            loss = F.cross_entropy(model(x[ids]), y[ids])
            opt.zero_grad()
            loss.backward()
        opt.step()
        dt = CLOCK() - t0
        model.train()
        return dt

    for _ in range(2):  # warm-up (the first snapshot also checks sums and batch mixing)
        for kind in kinds:
            step(kind)
    for _ in range(steps):
        for kind in kinds:
            times[kind].append(step(kind))
    cap.close()
    return {k: sorted(v)[len(v) // 2] * 1000 for k, v in times.items()}


def report(title, med):
    print(title)
    for k, v in med.items():
        print(f"  {k:16s} {v:8.1f} ms/step  ({v / med['plain']:.2f}x plain)")


def freeze_generic(model):
    """Freezes what the fast hooks do not capture: attention and the
    positional parameter."""
    model.pos.requires_grad_(False)
    for layer in model.enc:
        layer.self_attn.requires_grad_(False)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mlp", choices=["mlp", "transformer", "resnet", "scaling"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--widths", default="784,1024,1024,10")
    ap.add_argument("--batches", default="16,32,64,128")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                    help="wall: elapsed time; cpu: this process's CPU time (steadier on a shared machine)")
    args = ap.parse_args()
    global CLOCK
    if args.clock == "cpu":
        CLOCK = time.process_time
    torch.manual_seed(0)
    head = (f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock, median of {args.steps} "
            "steps each, interleaved")
    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "mlp":
            batch = args.batch or 128
            w = [int(v) for v in args.widths.split(",")]
            x, y = torch.randn(4096, w[0]), torch.randint(0, w[-1], (4096,))
            med = measure(mlp(w), x, y, batch, args.steps, ["plain", "capture"], tmp, "mlp")
            report(f"MLP {args.widths}, batch {batch}, {head}:", med)
        elif args.model == "transformer":
            batch = args.batch or 64
            x, y = torch.randint(0, 1000, (4096, 32)), torch.randint(0, 10, (4096,))
            med = measure(freeze_generic(Transformer()), x, y, batch, args.steps, ["plain", "capture"], tmp, "fast")
            report(f"transformer (2 layers, dim 64, 4 heads, 32 tokens), attention and positions frozen: fast hooks only, "
                   f"batch {batch}, {head}:", med)
            med = measure(Transformer(), x, y, batch, args.steps, ["plain", "capture"], tmp, "generic")
            report(f"the same, every parameter trained: generic path for attention and for the positional parameter "
                   f"(on the model itself: the whole model re-run), batch {batch}:", med)
            med = measure(Transformer(position_module=True), x, y, batch, args.steps, ["plain", "capture"], tmp, "addpos")
            report(f"the same with the positional parameter in a module of its own (x + pos), batch {batch}:", med)
        elif args.model == "resnet":
            batch = args.batch or 64
            x, y = torch.randn(1024, 3, 32, 32), torch.randint(0, 10, (1024,))
            med = measure(ResNet(), x, y, batch, args.steps, ["plain", "capture"], tmp, "resnet", eval_pass=True)
            report(f"ResNet-style CNN (3x32x32, 16-32 channels, BatchNorm in eval mode), batch {batch}, {head}:", med)
        else:
            x, y = torch.randint(0, 1000, (4096, 32)), torch.randint(0, 10, (4096,))
            print(f"transformer, generic path included, by batch size; {head}:")
            print(f"  {'batch':>5s} {'plain':>9s} {'capture':>9s} {'ratio':>6s} {'extra/example':>14s}")
            for batch in (int(v) for v in args.batches.split(",")):
                med = measure(Transformer(position_module=True), x, y, batch, args.steps, ["plain", "capture"], tmp,
                              f"b{batch}")
                print(f"  {batch:5d} {med['plain']:7.1f}ms {med['capture']:7.1f}ms {med['capture'] / med['plain']:5.2f}x "
                      f"{(med['capture'] - med['plain']) / batch:11.2f} ms")


if __name__ == "__main__":
    main()
