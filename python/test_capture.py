#!/usr/bin/python3
"""Checks gvdb_capture.py against PyTorch itself (run by cmd/gvdb's
TestPyTorchCapture; needs python3-torch and python3-numpy, which import
only under /usr/bin/python3).

    /usr/bin/python3 python/test_capture.py OUT

trains small models on synthetic data with the capture module, writing a
run directory for each: OUT/mlp (in-place ReLU, mean loss), OUT/cnn (sum
loss; convolutions stored as factors, dense, depthwise and grouped; a full
snapshot), OUT/shared (a layer applied twice over a sequence), OUT/text
(an embedding with a padding row, LayerNorm), OUT/seq1d (1-D
convolutions) and OUT/svrg (SVRG anchor gradients from a copy of the
model), then checks that refusals name what is wrong. For every
snapshot it checks that the per-example gradients materialized from the
written files equal PyTorch's batch-size-1 gradients to 1e-5 relative to
each gradient's norm, and writes OUT/expected.json: variance(B), nvar(B)
and gns of every snapshot computed in float64 NumPy from the materialized
gradients, which the Go test compares with gvdb's answers after import.
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gvdb_capture import Capture  # noqa: E402


def materialize(snap, anchor=False):
    """Per-example gradients (N, D) from a snapshot directory (or its SVRG
    anchor's), in the order of its manifest's layers, weights in PyTorch's
    (out, in) layout."""
    man = json.load(open(os.path.join(snap, "manifest.json")))
    assert man["weight_layout"] == "out_in"
    parts = {}
    for l in (man["anchor"]["layers"] if anchor else man["layers"]):
        f = {k: np.load(os.path.join(snap, v)) for k, v in l["files"].items()}
        for k, v in f.items():
            assert v.dtype == np.float32 and list(v.shape) == l["shapes"][k], (l["name"], k)
        if "A" in f:
            g = np.einsum("nto,nti->noi", f["Delta"].astype(np.float64), f["A"].astype(np.float64))
            parts[l["name"]] = g.reshape(g.shape[0], -1)
        else:
            parts[l["name"]] = f["rows"].astype(np.float64)
    ids = np.load(os.path.join(snap, "ids.npy"))
    return man, ids, parts


def statistics(g, batch):
    """variance(B), nvar(B), gns of per-example gradients g (N, D), as
    docs/QUERY.md defines them (moments with 1/N)."""
    n, dim = g.shape
    mu = g.mean(0)
    s = ((g - mu) ** 2).sum(1).mean()
    v = ((g - mu) ** 2).mean(0) / batch
    den = mu * mu + v
    nvar = np.where(den > 0, v / np.where(den > 0, den, 1), 0).mean()
    return {"variance": s / (batch * dim), "nvar": float(nvar), "gns": s / float(mu @ mu)}


def reference(model, loss_fn, x, y, names):
    """PyTorch's gradient of each example's own loss (batch size 1)."""
    params = dict(model.named_parameters())
    embeddings = {f"{k}.weight" for k, m in model.named_modules() if isinstance(m, nn.Embedding)}
    rows = {n: [] for n in names}
    for i in range(x.shape[0]):
        model.zero_grad()
        loss_fn(model(x[i:i + 1]), y[i:i + 1], reduction="sum").backward()
        for n in names:
            g = params[n].grad.detach()
            if n in embeddings:  # (vocabulary, dim) = (in, out): the run's out_in layout is its transpose
                g = g.T
            rows[n].append(g.reshape(g.shape[0], -1).flatten().double().numpy().copy())
    return {n: np.stack(r) for n, r in rows.items()}


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)         # T=64: dense (64*(9+4) > 36)
        self.conv2 = nn.Conv2d(4, 16, 3, stride=2)         # T=9: factors (9*(36+16) <= 576)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1, groups=16)  # depthwise: dense
        self.conv4 = nn.Conv2d(16, 16, 1, groups=4)        # grouped: dense
        self.fc = nn.Linear(16 * 3 * 3, 5)

    def forward(self, x):
        x = F.relu(self.conv1(x), inplace=True)
        x = F.relu(self.conv2(x), inplace=True)
        x = self.conv4(F.relu(self.conv3(x)))
        return self.fc(x.flatten(1))


class Shared(nn.Module):
    """A layer applied twice in one forward pass (weight sharing), on a
    sequence (positions between the batch and the features)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x):  # x: (N, 3, 6)
        h = self.fc(torch.tanh(self.fc(x)))
        return self.head(h.mean(dim=1))


class Seq1d(nn.Module):
    """1-D convolutions over a signal, one of them grouped and strided."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(3, 6, 3, padding=1)
        self.c2 = nn.Conv1d(6, 4, 3, stride=2, groups=2)
        self.head = nn.Linear(4 * 5, 2)

    def forward(self, x):  # (N, 3, 12)
        return self.head(self.c2(torch.relu(self.c1(x))).flatten(1))


class Text(nn.Module):
    """Token sequences: an embedding (with a padding row), LayerNorm, and
    a linear head on the mean over positions."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(30, 8, padding_idx=0)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, tokens):  # (N, 5)
        return self.head(self.norm(self.emb(tokens)).mean(dim=1))


def misuse(out):
    """Refusals name what is wrong."""
    def raises(exc, text, fn):
        try:
            fn()
        except exc as e:
            assert text in str(e), f"{exc.__name__} {e!r} does not say {text!r}"
            return
        raise AssertionError(f"no {exc.__name__} ({text})")

    bn = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    raises(ValueError, "1.weight, 1.bias (BatchNorm1d)", lambda: Capture(bn, os.path.join(out, "bn"), loss_reduction="mean", batch_size=4))
    Capture(bn, os.path.join(out, "bn-ignored"), loss_reduction="mean", batch_size=4, ignore=["1.weight", "1.bias"]).close()
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(4, 2)
            self.head = nn.Linear(4, 2)
    raises(ValueError, "attn.out_proj.weight", lambda: Capture(Attn(), os.path.join(out, "attn"), loss_reduction="mean", batch_size=4))
    raises(ValueError, "MultiheadAttention, which computes", lambda: Capture(Attn(), os.path.join(out, "attn"), loss_reduction="mean", batch_size=4))
    emb = nn.Embedding(10, 4, max_norm=1.0)
    raises(ValueError, "max_norm", lambda: Capture(emb, os.path.join(out, "emb"), loss_reduction="mean", batch_size=4))
    m = nn.Linear(3, 2)
    raises(ValueError, "loss_reduction", lambda: Capture(m, os.path.join(out, "r"), loss_reduction="avg", batch_size=4))
    cap = Capture(m, os.path.join(out, "misuse"), loss_reduction="sum", batch_size=4)
    x = torch.randn(4, 3)

    def dup():
        with cap.snapshot(0, [1, 1, 2, 3]):
            m(x).sum().backward()
    raises(ValueError, "repeat", dup)

    def no_backward():
        with cap.snapshot(1, [0, 1, 2, 3]):
            m(x)
    raises(RuntimeError, "no gradient reached", no_backward)
    raises(ValueError, "reserved", lambda: cap.log(2, where=1.0))
    assert not [e for e in os.listdir(os.path.join(out, "misuse")) if e.startswith("step-")], "a refused snapshot left a directory"
    cap.close()


def train(out, name, model, data, labels, reduction, batch, steps, every, full_at=None):
    torch.manual_seed(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    n = data.shape[0]
    expected, worst = {}, 0.0
    with Capture(model, os.path.join(out, name), loss_reduction=reduction, batch_size=batch, lr=0.05,
                 optimizer="sgd", dataset="synthetic", model_name=name, seed=1) as cap:
        for step in range(steps):
            full = step == full_at
            ids = torch.arange(n) if full else torch.randperm(n)[:batch]
            x, y = data[ids], labels[ids]
            snap = step % every == 0 or full
            ref = None
            if snap:
                names = [l["name"] for l in json.load(open(os.path.join(out, name, "run.json")))["layers"]]
                ref = reference(model, F.cross_entropy, x, y, names)
            with cap.snapshot(step, ids, population="full" if full else "sample", label=y) if snap else cap.off():
                loss = F.cross_entropy(model(x), y, reduction=reduction)
                opt.zero_grad()
                loss.backward()
            if not full:
                opt.step()
            cap.log(step, loss=loss.item())
            if snap:
                man, got_ids, parts = materialize(os.path.join(out, name, f"step-{step:020d}"))
                assert (got_ids == ids.numpy()).all()
                for layer, g in parts.items():
                    err = np.linalg.norm(g - ref[layer], axis=1) / np.maximum(np.linalg.norm(ref[layer], axis=1), 1e-30)
                    worst = max(worst, float(err.max()))
                    assert err.max() <= 1e-5, f"{name} step {step} {layer}: relative error {err.max():.3g}"
                g = np.concatenate([parts[l["name"]] for l in man["layers"]], axis=1)
                expected[str(step)] = statistics(g, batch)
                expected[str(step)]["kinds"] = {l["name"]: sorted(l["files"]) for l in man["layers"]}
    return expected, worst


def train_svrg(out):
    """An MLP with an SVRG anchor refreshed every 4 steps: every other
    step's snapshot also holds the same examples' gradients at the anchor.
    Checks both against batch-size-1 gradients and returns, per snapshot,
    svrg_variance(B) = Var_i[g_i(θ) − g_i(θ̃)] / (B·D) (moments with 1/N)."""
    import copy
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(inplace=True), nn.Linear(16, 3))
    x, y = torch.randn(200, 10), torch.randint(0, 3, (200,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batch, expected, worst = 8, {}, 0.0
    with Capture(model, os.path.join(out, "svrg"), loss_reduction="mean", batch_size=batch, lr=0.1) as cap:
        names = [l["name"] for l in json.load(open(os.path.join(out, "svrg", "run.json")))["layers"]]
        for step in range(8):
            if step % 4 == 0:
                anchor, anchor_step = copy.deepcopy(model), step
            ids = torch.randperm(200)[:32]
            snap = step % 2 == 0
            if snap:
                ref = reference(model, F.cross_entropy, x[ids], y[ids], names)
                ref_anchor = reference(anchor, F.cross_entropy, x[ids], y[ids], names)
            with cap.snapshot(step, ids) if snap else cap.off():
                loss = F.cross_entropy(model(x[ids]), y[ids])
                opt.zero_grad()
                loss.backward()
                if snap:
                    with cap.anchor(anchor, anchor_step):
                        F.cross_entropy(anchor(x[ids]), y[ids]).backward()
            opt.step()
            if snap:
                d = os.path.join(out, "svrg", f"step-{step:020d}")
                man, _, parts = materialize(d)
                _, _, aparts = materialize(d, anchor=True)
                assert man["anchor"]["step"] == anchor_step
                for want, got in ((ref, parts), (ref_anchor, aparts)):
                    for layer, g in got.items():
                        err = np.linalg.norm(g - want[layer], axis=1) / np.maximum(np.linalg.norm(want[layer], axis=1), 1e-30)
                        worst = max(worst, float(err.max()))
                        assert err.max() <= 1e-5, f"svrg step {step} {layer}: relative error {err.max():.3g}"
                g = np.concatenate([parts[n] for n in names], axis=1)
                ga = np.concatenate([aparts[n] for n in names], axis=1)
                diff = g - ga
                s = ((diff - diff.mean(0)) ** 2).sum(1).mean()
                expected[str(step)] = {"svrg_variance": s / (batch * g.shape[1]), "anchor_step": anchor_step}
    return expected, worst


def main():
    out = sys.argv[1]
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(20, 64), nn.ReLU(inplace=True), nn.Linear(64, 64), nn.ReLU(inplace=True),
                        nn.Linear(64, 3))
    x, y = torch.randn(300, 20), torch.randint(0, 3, (300,))
    exp_mlp, w1 = train(out, "mlp", mlp, x, y, "mean", 32, 25, 5)
    cnn = CNN()
    xi, yi = torch.randn(200, 1, 8, 8), torch.randint(0, 5, (200,))
    exp_cnn, w2 = train(out, "cnn", cnn, xi, yi, "sum", 16, 12, 4, full_at=6)
    xs, ys = torch.randn(40, 3, 6), torch.randint(0, 2, (40,))
    exp_shared, w3 = train(out, "shared", Shared(), xs, ys, "mean", 8, 3, 1)
    x1, y1 = torch.randn(40, 3, 12), torch.randint(0, 2, (40,))
    exp_seq, w5 = train(out, "seq1d", Seq1d(), x1, y1, "sum", 8, 3, 1)
    w3 = max(w3, w5)
    xt, yt = torch.randint(0, 30, (60, 5)), torch.randint(0, 3, (60,))
    exp_text, w4 = train(out, "text", Text(), xt, yt, "mean", 8, 3, 1)
    w3 = max(w3, w4)
    exp_svrg, w6 = train_svrg(out)
    w3 = max(w3, w6)
    misuse(os.path.join(out, "misuse"))
    w2 = max(w2, w3)
    json.dump({"mlp": exp_mlp, "cnn": exp_cnn, "shared": exp_shared, "text": exp_text, "seq1d": exp_seq, "svrg": exp_svrg, "batch": {"mlp": 32, "cnn": 16, "shared": 8, "text": 8, "seq1d": 8}}, open(os.path.join(out, "expected.json"), "w"), indent=1)
    print(f"per-example gradients match batch-size-1 gradients: worst relative error {max(w1, w2):.3g}")


if __name__ == "__main__":
    main()
