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
convolutions), OUT/svrg (SVRG anchor gradients from a copy of the
model), and for the generic path and BatchNorm OUT/transformer
(Embedding, a free positional Parameter, TransformerEncoderLayer, linear
head), OUT/lstm and OUT/gru (batch-size-1 fallback), OUT/convt
(ConvTranspose2d, GroupNorm), OUT/custom (a module's own Parameters used
through functional ops) and OUT/bn (a residual CNN with BatchNorm in eval
mode for the snapshots); then OUT/full-one and OUT/full-chunks (a full
snapshot of 256 examples in one pass and in 4), and checks that refusals
name what is wrong (BatchNorm in train mode with and without ignore=, a
batch-mixing module, dropout inside a re-run module, tied weights) and
that the batch-mixing check changes neither training's RNG nor buffers. For every
snapshot it checks that the per-example gradients materialized from the
written files equal PyTorch's batch-size-1 gradients to 1e-5 relative to
each gradient's norm, and writes OUT/expected.json: variance(B), nvar(B)
and gns of every snapshot computed in float64 NumPy from the materialized
gradients, which the Go test compares with gvdb's answers after import,
and each example's whole-model gradient norm from batch-size-1 autograd
(grad_norm, by example id).
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
    """Token sequences: an embedding (with a padding row; factors), a
    learned position embedding (dense), LayerNorm, and a linear head on
    the mean over positions."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(30, 8, padding_idx=0)
        self.position = nn.Embedding(8, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, tokens):  # (N, T)
        positions = torch.arange(tokens.shape[1]).expand(tokens.shape[0], -1)
        return self.head(self.norm(self.emb(tokens) + self.position(positions)).mean(dim=1))


class TinyTransformer(nn.Module):
    """A transformer classifier: token embedding, a free positional
    parameter, one encoder layer (MultiheadAttention, LayerNorm, the
    feed-forward Linears) and a linear head on the mean over positions."""

    def __init__(self, vocab=40, dim=16, seq=8, classes=3, dropout=0.0):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(0.1 * torch.randn(1, seq, dim))
        self.enc = nn.TransformerEncoderLayer(dim, 2, 32, dropout=dropout, batch_first=True)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens):  # (N, seq)
        return self.head(self.enc(self.emb(tokens) + self.pos).mean(dim=1))


class Recurrent(nn.Module):
    """An LSTM (two layers, sequence-first) or GRU (batch-first)
    classifier on its last output."""

    def __init__(self, cell, batch_first, layers):
        super().__init__()
        self.batch_first = batch_first
        self.rnn = cell(4, 8, num_layers=layers, batch_first=batch_first)
        self.head = nn.Linear(8, 3)

    def forward(self, x):  # (N, T, 4)
        out, _ = self.rnn(x if self.batch_first else x.transpose(0, 1))
        return self.head(out[:, -1] if self.batch_first else out[-1])


class Scaled(nn.Module):
    """A custom module with its own parameters, used through functional ops."""

    def __init__(self, d_in, d_out):
        super().__init__()
        self.w = nn.Parameter(0.3 * torch.randn(d_out, d_in))
        self.gain = nn.Parameter(torch.ones(d_out))

    def forward(self, x):
        return F.linear(x, self.w) * self.gain


class BNCNN(nn.Module):
    """A small ResNet-style CNN with BatchNorm (a residual block)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(h + self.bn2(self.conv2(h)))
        return self.fc(h.mean(dim=(2, 3)))


def more_models(out):
    """The models of the generic path and BatchNorm in eval mode, each
    trained with snapshots checked against batch-size-1 gradients."""
    exp, worst = {}, 0.0
    torch.manual_seed(3)
    xt, yt = torch.randint(0, 40, (64, 8)), torch.randint(0, 3, (64,))
    exp["transformer"], w = train(out, "transformer", TinyTransformer(), xt, yt, "mean", 16, 3, 2)
    worst = max(worst, w)
    xr, yr = torch.randn(48, 5, 4), torch.randint(0, 3, (48,))
    exp["lstm"], w = train(out, "lstm", Recurrent(nn.LSTM, False, 2), xr, yr, "mean", 12, 2, 1)
    worst = max(worst, w)
    exp["gru"], w = train(out, "gru", Recurrent(nn.GRU, True, 1), xr, yr, "sum", 12, 2, 1)
    worst = max(worst, w)
    convt = nn.Sequential(nn.ConvTranspose2d(2, 3, 3, stride=2), nn.GroupNorm(1, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * 9 * 9, 2))
    xc, yc = torch.randn(40, 2, 4, 4), torch.randint(0, 2, (40,))
    exp["convt"], w = train(out, "convt", convt, xc, yc, "mean", 10, 2, 1)
    worst = max(worst, w)
    custom = nn.Sequential(Scaled(6, 8), nn.Tanh(), nn.Linear(8, 2))
    xs, ys = torch.randn(40, 6), torch.randint(0, 2, (40,))
    exp["custom"], w = train(out, "custom", custom, xs, ys, "mean", 10, 2, 1)
    worst = max(worst, w)
    xb, yb = torch.randn(80, 1, 6, 6), torch.randint(0, 3, (80,))
    exp["bn"], w = train(out, "bn", BNCNN(), xb, yb, "mean", 16, 6, 3, eval_snapshots=True)
    worst = max(worst, w)
    # how each parameter was captured, and the parameters left out
    model = TinyTransformer()
    with Capture(model, os.path.join(out, "ignored"), loss_reduction="mean", batch_size=8,
                 ignore=["head.bias"]) as cap:
        with cap.snapshot(0, torch.arange(8)):
            F.cross_entropy(model(xt[:8]), yt[:8]).backward()
    run = json.load(open(os.path.join(out, "ignored", "run.json")))
    man = json.load(open(os.path.join(out, "ignored", f"step-{0:020d}", "manifest.json")))
    how = {l["name"]: l["capture"] for l in run["layers"]}
    assert run["ignored"] == ["head.bias"] and "head.bias" not in how, run
    assert how["pos"] == "generic" and how["enc.self_attn.in_proj_weight"] == "generic" and \
        how["enc.linear1.weight"] == "hook" and how["emb.weight"] == "hook", how
    how = {l["name"]: l["capture"] for l in man["layers"]}
    assert man["passes"] == 1 and how["pos"] == "generic" and how["enc.self_attn.out_proj.weight"] == "generic" \
        and how["emb.weight"] == "factors" and how["enc.norm1.weight"] == "dense", how
    rnn = Recurrent(nn.GRU, True, 1)
    with Capture(rnn, os.path.join(out, "captured-gru"), loss_reduction="mean", batch_size=8) as cap:
        with cap.snapshot(0, torch.arange(8)):
            F.cross_entropy(rnn(xr[:8]), yr[:8]).backward()
    man = json.load(open(os.path.join(out, "captured-gru", f"step-{0:020d}", "manifest.json")))
    assert {l["name"]: l["capture"] for l in man["layers"]}["rnn.weight_hh_l0"] == "bs1", man
    return exp, worst


def chunked(out):
    """A full snapshot of 256 examples in 4 passes of 64 (mean loss per
    pass) equals the same snapshot in one pass of 256: each example's
    gradient of the whole model to 1e-6 relative, of each layer to 1e-5
    (float32 rounding in the batched products depends on the batch's
    shape); ids that do not match the examples seen are refused with both
    counts."""
    torch.manual_seed(4)
    model = TinyTransformer()
    x, y = torch.randint(0, 40, (256, 8)), torch.randint(0, 3, (256,))
    ids = torch.arange(1000, 1256)
    for name, chunk in (("full-one", 256), ("full-chunks", 64)):
        with Capture(model, os.path.join(out, name), loss_reduction="mean", batch_size=16) as cap:
            with cap.snapshot(0, ids, population="full", label=y):
                for i in range(0, 256, chunk):
                    model.zero_grad()
                    F.cross_entropy(model(x[i:i + chunk]), y[i:i + chunk]).backward()
    _, ids1, one = materialize(os.path.join(out, "full-one", f"step-{0:020d}"))
    man, ids4, four = materialize(os.path.join(out, "full-chunks", f"step-{0:020d}"))
    assert (ids1 == ids4).all() and (ids1 == ids.numpy()).all() and man["examples"] == 256 and man["passes"] == 4
    for layer, g in one.items():
        err = np.linalg.norm(four[layer] - g, axis=1) / np.maximum(np.linalg.norm(g, axis=1), 1e-30)
        assert err.max() <= 1e-5, f"chunked {layer}: relative difference {err.max():.3g}"
    g1 = np.concatenate(list(one.values()), axis=1)
    g4 = np.concatenate([four[layer] for layer in one], axis=1)
    worst = float((np.linalg.norm(g4 - g1, axis=1) / np.linalg.norm(g1, axis=1)).max())
    assert worst <= 1e-6, f"chunked: whole-model relative difference {worst:.3g}"
    # the chunks against batch-size-1 autograd, on a few examples
    names = list(one)
    pick = torch.tensor([0, 70, 200])
    ref = reference(model, F.cross_entropy, x[pick], y[pick], names)
    for layer in names:
        err = np.linalg.norm(four[layer][pick.numpy()] - ref[layer], axis=1) / np.linalg.norm(ref[layer], axis=1)
        assert err.max() <= 1e-5, f"chunked {layer} against batch size 1: {err.max():.3g}"
    # passes of different sequence lengths: factors padded with zero positions
    text = Text()
    xa, xb, yv = torch.randint(0, 30, (6, 5)), torch.randint(0, 30, (4, 7)), torch.randint(0, 3, (10,))
    with Capture(text, os.path.join(out, "full-ragged"), loss_reduction="sum", batch_size=4) as cap:
        with cap.snapshot(0, torch.arange(10), population="full"):
            for xc, yc in ((xa, yv[:6]), (xb, yv[6:])):
                F.cross_entropy(text(xc), yc, reduction="sum").backward()
    man, _, got = materialize(os.path.join(out, "full-ragged", f"step-{0:020d}"))
    assert man["layers"][0]["shapes"]["A"] == [10, 7, 30], man["layers"][0]
    assert man["layers"][1]["shapes"]["rows"] == [10, 64], man["layers"][1]
    names = list(got)
    ref = {k: np.concatenate([a, b]) for (k, a), b in zip(reference(text, F.cross_entropy, xa, yv[:6], names).items(),
                                                            reference(text, F.cross_entropy, xb, yv[6:], names).values())}
    for layer in names:
        err = np.linalg.norm(got[layer] - ref[layer], axis=1) / np.maximum(np.linalg.norm(ref[layer], axis=1), 1e-30)
        assert err.max() <= 1e-5, f"ragged chunks {layer}: {err.max():.3g}"
    cap = Capture(model, os.path.join(out, "full-short"), loss_reduction="mean", batch_size=16)
    try:
        with cap.snapshot(0, ids, population="full"):
            for i in range(0, 128, 64):
                F.cross_entropy(model(x[i:i + 64]), y[i:i + 64]).backward()
    except ValueError as e:
        assert "256 ids for 128 examples seen in 2 forward pass(es)" in str(e), e
    else:
        raise AssertionError("256 ids for 128 examples: no error")
    assert not [e for e in os.listdir(os.path.join(out, "full-short")) if "step-" in e], "a refused snapshot left files"
    return worst


def batch_mixing(out):
    """BatchNorm in train mode is refused, ignore= included, and so is any
    module that mixes examples; the perturbation check neither trips on
    dropout nor changes training (RNG and buffers)."""
    def raises(text, fn):
        try:
            fn()
        except ValueError as e:
            assert text in str(e), f"{e!r} does not say {text!r}"
            return
        raise AssertionError(f"no ValueError ({text})")

    x, y = torch.randn(16, 1, 6, 6), torch.randint(0, 3, (16,))
    for ignore in ((), ("bn1.weight", "bn1.bias", "bn2.weight", "bn2.bias")):
        model = BNCNN()
        d = os.path.join(out, f"bn-train-{len(ignore)}")
        cap = Capture(model, d, loss_reduction="mean", batch_size=16, ignore=ignore)

        def snap():
            with cap.snapshot(0, torch.arange(16)):
                F.cross_entropy(model(x), y).backward()
        raises("bn1 (BatchNorm2d) normalizes each example with statistics of the whole batch in train mode", snap)
        raises("ignore= cannot help", snap)
        assert not [e for e in os.listdir(d) if "step-" in e]
    raises("track_running_stats=False", lambda: Capture(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3, track_running_stats=False)),
                                                        os.path.join(out, "bn-nostats"), loss_reduction="mean", batch_size=4))

    class Center(nn.Module):  # subtracts the batch mean: mixes examples, no parameters
        def forward(self, x):
            return x - x.mean(dim=0, keepdim=True)

    mixing = nn.Sequential(nn.Linear(5, 6), Center(), nn.Linear(6, 2))
    xm, ym = torch.randn(8, 5), torch.randint(0, 2, (8,))
    cap = Capture(mixing, os.path.join(out, "mixing"), loss_reduction="mean", batch_size=8)

    def snap_mixing():
        with cap.snapshot(0, torch.arange(8)):
            F.cross_entropy(mixing(xm), ym).backward()
    raises("the model mixes examples across the batch", snap_mixing)

    class Counter(nn.Module):  # a buffer the forward pass updates
        def __init__(self):
            super().__init__()
            self.register_buffer("calls", torch.zeros(()))

        def forward(self, x):
            self.calls += 1
            return x

    def run(capture):
        torch.manual_seed(5)
        model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.5), Counter(), nn.Linear(16, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        cap = Capture(model, os.path.join(out, f"dropout-{capture}"), loss_reduction="mean", batch_size=8)
        losses = []
        for step in range(4):
            with cap.snapshot(step, torch.arange(8)) if capture else cap.off():
                loss = F.cross_entropy(model(xm), ym)
                opt.zero_grad()
                loss.backward()
            opt.step()
            losses.append(loss.item())
        cap.close()
        return losses, model[3].calls.item(), [p.detach().clone() for p in model.parameters()]

    plain, captured = run(False), run(True)
    assert plain[0] == captured[0], f"losses with capture {captured[0]}, without {plain[0]}"
    assert plain[1] == captured[1] == 4, f"buffer after 4 steps: {captured[1]} with capture, {plain[1]} without"
    assert all(torch.equal(a, b) for a, b in zip(plain[2], captured[2])), "capture changed training"


def refusals(out):
    """What the generic path cannot capture exactly is refused with the
    reason: dropout inside a re-run module, tied weights."""
    def raises(text, fn):
        try:
            fn()
        except ValueError as e:
            assert text in str(e), f"{e!r} does not say {text!r}"
            return
        raise AssertionError(f"no ValueError ({text})")

    torch.manual_seed(6)
    x, y = torch.randint(0, 40, (8, 8)), torch.randint(0, 3, (8,))
    model = TinyTransformer(dropout=0.3)
    cap = Capture(model, os.path.join(out, "dropout-attn"), loss_reduction="mean", batch_size=8, ignore=["pos"])

    def snap():
        with cap.snapshot(0, torch.arange(8)):
            F.cross_entropy(model(x), y).backward()
    raises("enc.self_attn (MultiheadAttention): re-running its forward on each example does not reproduce", snap)
    raises("dropout", snap)
    model.eval()  # the snapshot's pass in eval mode: captured
    snap()

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(40, 8)
            self.mix = nn.Linear(8, 8)

        def forward(self, tokens):
            return F.linear(torch.tanh(self.mix(self.emb(tokens).mean(dim=1))), self.emb.weight)

    tied = Tied()
    cap = Capture(tied, os.path.join(out, "tied"), loss_reduction="sum", batch_size=8)

    def snap_tied():
        with cap.snapshot(0, torch.arange(8)):
            F.cross_entropy(tied(x), y, reduction="sum").backward()
    raises("do not add up to the gradient autograd computed for emb.weight", snap_tied)


def misuse(out):
    """Refusals name what is wrong."""
    def raises(exc, text, fn):
        try:
            fn()
        except exc as e:
            assert text in str(e), f"{exc.__name__} {e!r} does not say {text!r}"
            return
        raise AssertionError(f"no {exc.__name__} ({text})")

    raises(ValueError, "ignore= names 1.wieght", lambda: Capture(nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2)), os.path.join(out, "typo"), loss_reduction="mean", batch_size=4, ignore=["1.wieght"]))
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
    import warnings
    bad = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    with torch.no_grad():
        bad[1].weight[0, 0] = float("nan")
    nan = Capture(bad, os.path.join(out, "nan"), loss_reduction="sum", batch_size=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with nan.snapshot(0, [0, 1, 2, 3]):
            bad(x).sum().backward()
    assert any("NaN or Inf gradients at step 0 in 0.weight, 0.bias (kept)" in str(w.message) for w in caught), \
        [str(w.message) for w in caught]
    nan.close()
    assert not [e for e in os.listdir(os.path.join(out, "misuse")) if e.startswith("step-")], "a refused snapshot left a directory"
    cap.close()


def train(out, name, model, data, labels, reduction, batch, steps, every, full_at=None, eval_snapshots=False):
    """Trains model with snapshots every `every` steps (a full snapshot at
    step full_at), checking each against batch-size-1 gradients; with
    eval_snapshots, a snapshot's pass (and its reference) runs in eval
    mode (BatchNorm's running statistics)."""
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
            if snap and eval_snapshots:
                model.eval()
            if snap:
                names = [l["name"] for l in json.load(open(os.path.join(out, name, "run.json")))["layers"]]
                ref = reference(model, F.cross_entropy, x, y, names)
            with cap.snapshot(step, ids, population="full" if full else "sample", label=y) if snap else cap.off():
                loss = F.cross_entropy(model(x), y, reduction=reduction)
                opt.zero_grad()
                loss.backward()
            model.train()
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
                trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
                assert g.shape[1] == trainable, f"{name}: {g.shape[1]} of {trainable} trainable parameters captured"
                expected[str(step)] = statistics(g, batch)
                expected[str(step)]["kinds"] = {l["name"]: sorted(l["files"]) for l in man["layers"]}
                # whole-model gradient norms of batch-size-1 autograd, per example id
                full = np.concatenate([ref[l["name"]] for l in man["layers"]], axis=1)
                expected[str(step)]["grad_norm"] = {str(int(i)): float(v) for i, v in
                                                    zip(ids.numpy(), np.linalg.norm(full, axis=1))}
    return expected, worst


def train_svrg(out):
    """An MLP (its first layer a custom module: the generic path) with an
    SVRG anchor refreshed every 4 steps: every other step's snapshot also
    holds the same examples' gradients at the anchor. Checks both against
    batch-size-1 gradients and returns, per snapshot,
    svrg_variance(B) = Var_i[g_i(θ) − g_i(θ̃)] / (B·D) (moments with 1/N)."""
    import copy
    torch.manual_seed(2)
    model = nn.Sequential(Scaled(10, 16), nn.ReLU(inplace=True), nn.Linear(16, 3))
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
    exp_more, w7 = more_models(out)
    w3 = max(w3, w7)
    chunk_worst = chunked(out)
    batch_mixing(os.path.join(out, "mixing"))
    refusals(os.path.join(out, "refusals"))
    w2 = max(w2, w3)
    json.dump({"mlp": exp_mlp, "cnn": exp_cnn, "shared": exp_shared, "text": exp_text, "seq1d": exp_seq, "svrg": exp_svrg, **exp_more,
               "batch": {"mlp": 32, "cnn": 16, "shared": 8, "text": 8, "seq1d": 8, "transformer": 16, "lstm": 12, "gru": 12, "convt": 10, "custom": 10, "bn": 16}},
              open(os.path.join(out, "expected.json"), "w"), indent=1)
    print(f"per-example gradients match batch-size-1 gradients: worst relative error {max(w1, w2):.3g}; "
          f"a full snapshot in 4 passes against 1 (whole model, per example): {chunk_worst:.3g}")


if __name__ == "__main__":
    main()
