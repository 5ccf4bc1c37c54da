"""Capture per-example gradients of a PyTorch model for gvdb.

Copy this file next to your training script; it needs only torch (>= 1.13)
and numpy. It writes a gvdb run directory (docs/INTERCHANGE.md) that

    gvdb import DIR --run NAME [--follow]

ingests. Example (synthetic data, an MLP):

    import torch, torch.nn as nn, torch.nn.functional as F
    from gvdb_capture import Capture

    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(inplace=True), nn.Linear(32, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(512, 20), torch.randint(0, 3, (512,))
    with Capture(model, "runs/demo", loss_reduction="mean", batch_size=64, lr=0.1) as cap:
        for step in range(100):
            ids = torch.randperm(512)[:64]
            with cap.snapshot(step, ids, label=y[ids]) if step % 10 == 0 else cap.off():
                loss = F.cross_entropy(model(x[ids]), y[ids])
                opt.zero_grad(); loss.backward()
            opt.step(); cap.log(step, loss=loss.item())

Every trainable parameter is captured exactly, or the capture refuses
with the reason. Stored gradients are those of each example's own loss
l_i (with loss_reduction="mean" the captured output gradients are scaled
by the pass's example count). How each module's parameters are captured,
per snapshot and example i (T: the positions of a call, the dimensions
between the batch and the features; a module called several times in one
forward pass contributes every call, as time steps):

  module                         how                                            cost per snapshot
  -----------------------------  ---------------------------------------------  -------------------------------
  nn.Linear                      hooks: input a_it and output gradient d_it;    small: the layer's input and
                                 G_i = sum_t a_it d_it^T, stored as factors     output gradient, kept; the
                                 (A, Delta) when T*(In+Out) <= In*Out, else as  product only when dense is
                                 dense rows (out, in); bias sum_t d_it          smaller
  nn.Conv1d, nn.Conv2d (zero     the same with a_it the unfolded input patch    factors: an unfold of the input;
  padding; grouped/depthwise     (C, kh, kw) at output position t (F.unfold);   dense: one convolution of the
  dense per group)               Conv1d as a Conv2d of height 1                 input by the output gradient,
                                                                                the batch as groups
  nn.Embedding                   the same with a_it the one-hot token (a        one-hot factors (T*vocabulary)
                                 padding_idx row gets no gradient); its (V, D)  or dense rows
                                 weight is written (D, V) in the out_in layout
  nn.LayerNorm, BatchNorm (eval) hooks: dense rows sum_t d_it * xhat_it and     one normalization of the input
                                 sum_t d_it, xhat the normalized input
                                 (BatchNorm: with its running statistics)
  anything else: nn.Multihead-   generic: the module's inputs and output        a second forward and backward of
  Attention, free nn.Parameters  gradients are kept; per-example gradients of   the module per example, batched
  (their owner module is         its own parameters are its vector-Jacobian     by vmap (torch.func, or
  re-run), nn.ConvTranspose*d,   product, vmap(grad(...)) of functional_call    functorch on torch 1.13); dense
  GroupNorm, custom modules,     on each example (batch of 1), dense rows in    rows of every parameter
  convolutions with other        PyTorch's layout
  padding
  nn.LSTM, nn.GRU, nn.RNN, and   generic, one batch-size-1 forward and          N small forward/backward passes
  where vmap cannot run a        backward per example ("bs1"; functorch's       of the module
  module                         vmap fails on LSTM and GRU in torch 1.13)

A generic module's tensors carry the batch in dimension 0 (recurrent
layers and nn.MultiheadAttention: as their batch_first says); its
forward, re-run on the recorded inputs, must reproduce the pass's output
(no dropout inside it in the snapshot's pass: set p=0 or eval mode),
which is checked on every call. At the first snapshot the sum of the
captured per-example gradients of every parameter is checked against the
gradient autograd computed for it (a weight also used outside its
module, as tied embeddings are, is refused by name).

Batch mixing. BatchNorm in train mode normalizes each example with the
batch's statistics, so no parameter upstream of it has a per-example
gradient: a snapshot's pass with BatchNorm in train mode is refused
(ignore= does not help); run the snapshot's pass in eval mode, use
GroupNorm or LayerNorm, or freeze the BatchNorm layers (eval mode). Any
other module that mixes examples is refused too: at the first pass of a
snapshot (and whenever modules' train/eval modes change) one example's
input is perturbed under no_grad, with the RNG state forked (dropout
gives no false positive) and the model's buffers restored afterwards, and
no other example's output may move.

Chunked snapshots. A snapshot block may run several forward/backward
passes (a full snapshot of the whole training set in chunks): a pass is
one call of the model's forward; each contributes its examples in order,
and the ids given are all of them, in order. With loss_reduction="mean"
each pass's loss is the mean over that pass's examples. A pass's captured
values are written when the next pass starts, so memory stays one chunk.

ignore=[...] leaves parameters out; the run records them (run.json
"ignored"), and gvdb's totals then cover the rest of the model.

SVRG: inside a snapshot block, `with cap.anchor(anchor_model, anchor_step):`
captures the same examples' gradients under a copy of the model holding
the anchor parameters (run its forward and backward on the same batch in
that block); gvdb's svrg_variance and svrg_nvar then measure SVRG on the
snapshot.

Output gradients are captured with tensor hooks (Tensor.register_hook on
each module's output), not full backward hooks, so in-place activations
(nn.ReLU(inplace=True)) work.
"""

import collections
import contextlib
import inspect
import json
import math
import os
import re
import shutil
import tempfile
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils._pytree import tree_flatten, tree_unflatten

FORMAT_VERSION = 1

# Names the query language reserves: not allowed as layer, scalar or
# attribute names.
RESERVED = {
    "step", "run", "layer", "population", "example_id", "select", "from", "where", "group", "by", "order", "limit",
    "having", "as", "and", "or", "not", "in", "glob", "between", "plot", "to", "show", "scale", "title", "desc",
    "asc", "window", "config",
}

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Relative tolerances: a re-run forward against the pass's output, and the
# sum of the captured per-example gradients against autograd's gradient
# (relative to the sum of the examples' gradient norms).
_RECOMPUTE_TOL = 1e-4
_SUM_TOL = 1e-4


def _check_name(kind, name):
    if name.lower() in RESERVED or not _NAME.match(name):
        raise ValueError(f"gvdb_capture: {kind} name {name!r} is reserved by gvdb's query language or not a name "
                         "(a letter or _, then letters, digits, _)")


def _functorch():
    """vmap, grad and functional_call: torch.func (torch >= 2) or functorch
    and torch.nn.utils.stateless (torch 1.13)."""
    try:
        from torch.func import functional_call, grad, vmap
    except ImportError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from functorch import grad, vmap
            from torch.nn.utils.stateless import functional_call
    return vmap, grad, functional_call


def _batch_statistics(m):
    """Whether BatchNorm module m normalizes with the batch's statistics."""
    return m.training or m.running_mean is None


def _bn_refusal(name, m):
    how = "in train mode" if m.running_mean is not None else "with track_running_stats=False (in every mode)"
    return ValueError(
        f"gvdb_capture: {name or type(m).__name__} ({type(m).__name__}) normalizes each example with statistics of "
        f"the whole batch {how}, so no parameter upstream of it has a per-example gradient (ignore= cannot help). "
        "Run the snapshot's pass with BatchNorm in eval mode (model.eval() before the snapshot's forward, "
        "model.train() after: running statistics), use GroupNorm or LayerNorm, or freeze the BatchNorm layers "
        "(eval mode for them throughout)")


# -- fast units: hooks on modules whose per-example gradients follow from
# -- their input and output gradient -----------------------------------------

_FAST_FORWARDS = {nn.Linear: nn.Linear.forward, nn.Conv1d: nn.Conv1d.forward, nn.Conv2d: nn.Conv2d.forward,
                  nn.Embedding: nn.Embedding.forward, nn.LayerNorm: nn.LayerNorm.forward}


def _is_fast(name, m):
    """Whether hooks capture module m's own parameters (raising for a
    configuration that no path captures exactly)."""
    if isinstance(m, nn.Embedding):
        if m.scale_grad_by_freq:
            raise ValueError(f"gvdb_capture: {name}: an Embedding with scale_grad_by_freq scales gradients by the "
                             "batch's token counts (the examples are coupled); pass ignore=[...] to leave it out")
        if m.max_norm is not None:
            raise ValueError(f"gvdb_capture: {name}: an Embedding with max_norm renormalizes its weight during the "
                             "forward pass and is not captured; pass ignore=[...] to leave it out")
    if isinstance(m, _BatchNorm):
        return type(m).forward is _BatchNorm.forward
    for cls, fwd in _FAST_FORWARDS.items():
        if isinstance(m, cls):
            if type(m).forward is not fwd:
                return False  # a subclass with its own forward: generic
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                return m.padding_mode == "zeros" and not (isinstance(m.padding, str) and m.padding != "valid")
            return True
    return False


class _Fast:
    """A module captured by hooks: per forward call, the input side and the
    output gradient, both (N, T, ...)."""

    generic = False

    def __init__(self, label, module, params):
        self.label, self.module = label, module
        self.params = params  # [(entry name, attribute, parameter)]
        self.calls = []  # [pass, input side, output gradient]

    def schema(self):
        m, out = self.module, []
        for entry, attr, p in self.params:
            if attr == "bias":
                out.append({"name": entry, "kind": "bias", "shape": list(p.shape)})
            elif isinstance(m, nn.Linear):
                out.append({"name": entry, "kind": "dense", "shape": [m.out_features, m.in_features]})
            elif isinstance(m, (nn.Conv1d, nn.Conv2d)):
                out.append({"name": entry, "kind": "conv",
                            "shape": [m.out_channels, m.in_channels // m.groups * math.prod(m.kernel_size)]})
            elif isinstance(m, nn.Embedding):
                # y = onehot(idx) W: W is (in, out) = (vocabulary, dim); in the
                # run's out_in layout its shape is written (dim, vocabulary).
                out.append({"name": entry, "kind": "dense", "shape": [m.embedding_dim, m.num_embeddings]})
            else:  # LayerNorm, BatchNorm
                out.append({"name": entry, "kind": "other", "shape": list(p.shape)})
        return out

    def stored(self, attr, g):
        """Autograd's gradient of a parameter, flattened in the stored layout."""
        if attr == "weight" and isinstance(self.module, nn.Embedding):
            return g.t().reshape(-1)
        return g.reshape(-1)

    def attach(self, rec):
        def hook(module, inp, out):
            if rec.cap._suspended or not torch.is_tensor(out) or not out.requires_grad:
                return
            if isinstance(module, _BatchNorm) and _batch_statistics(module):
                raise _bn_refusal(self.label, module)
            p = rec.pass_index()
            x = inp[0]
            if isinstance(module, (nn.Conv1d, nn.Conv2d)) and self.conv_form(rec, out) == "dense":
                x = x.detach()  # the per-example weight gradient: a convolution of the input by the output gradient
            else:
                x = self.inputs(x)
            call = [p, x, None, out.shape]
            self.calls.append(call)

            def grad_hook(g):
                call[2] = self.outputs(g.detach())
                rec.fired(p)

            out.register_hook(grad_hook)

        return [self.module.register_forward_hook(hook)]

    def conv_form(self, rec, out):
        """A convolution's weight in this snapshot: "factors" when
        T*(In+Out) <= In*Out for the first call's T (and groups = 1), else
        "dense"."""
        form = rec.conv_forms.get(self.label)
        if form is None:
            m = self.module
            t, fin, fout = math.prod(out.shape[2:]), m.in_channels * math.prod(m.kernel_size), m.out_channels
            form = "factors" if m.groups == 1 and t * (fin + fout) <= fin * fout else "dense"
            if not any(attr == "weight" for _, attr, _ in self.params):
                form = "bias"
            rec.conv_forms[self.label] = form
        return form

    def inputs(self, x):
        """The input side of one call: (N, T, In) for a layer's input
        (Linear), token indices (N, T) (Embedding), the normalized input
        (N, T, ...) (LayerNorm); channels first, (N, In, T), for unfolded
        patches (Conv) and the normalized input (BatchNorm, its running
        statistics)."""
        m = self.module
        x = x.detach()
        if isinstance(m, nn.Linear):
            return x.reshape(x.shape[0], -1, x.shape[-1])
        if isinstance(m, nn.Conv2d):
            padding = (0, 0) if m.padding == "valid" else m.padding
            return F.unfold(x, m.kernel_size, dilation=m.dilation, padding=padding, stride=m.stride)
        if isinstance(m, nn.Conv1d):  # as a Conv2d of height 1
            padding = 0 if m.padding == "valid" else m.padding[0]
            return F.unfold(x.unsqueeze(2), (1, m.kernel_size[0]), dilation=(1, m.dilation[0]), padding=(0, padding),
                            stride=(1, m.stride[0]))
        if isinstance(m, nn.Embedding):
            return x.reshape(x.shape[0], -1)
        if isinstance(m, _BatchNorm):
            shape = (1, -1) + (1,) * (x.dim() - 2)
            xh = (x - m.running_mean.reshape(shape)) * torch.rsqrt(m.running_var.reshape(shape) + m.eps)
            return xh.reshape(x.shape[0], x.shape[1], -1)
        k = len(m.normalized_shape)
        xh = F.layer_norm(x, m.normalized_shape, eps=m.eps)
        return xh.reshape(x.shape[0], -1, *x.shape[x.dim() - k:])

    def outputs(self, g):
        """The output gradient of one call, in the layout of inputs."""
        m = self.module
        if isinstance(m, (nn.Conv1d, nn.Conv2d, _BatchNorm)):  # (N, C, ...) -> (N, C, T)
            return g.reshape(g.shape[0], g.shape[1], -1)
        if isinstance(m, nn.LayerNorm):
            k = len(m.normalized_shape)
            return g.reshape(g.shape[0], -1, *g.shape[g.dim() - k:])
        return g.reshape(g.shape[0], -1, g.shape[-1])

    def finish(self, rec, p, n, scale):
        """Hands the per-example gradients of pass p to the recorder."""
        calls = [c for c in self.calls if c[0] == p]
        self.calls = [c for c in self.calls if c[0] != p]
        if not calls or any(c[2] is None for c in calls):
            raise RuntimeError(f"gvdb_capture: no gradient reached {self.label} in forward pass {p + 1} of the "
                               "snapshot: run the model's forward and loss.backward() inside the with block")
        m = self.module
        cf = isinstance(m, (nn.Conv1d, nn.Conv2d, _BatchNorm))  # channels first: positions in dimension 2
        tdim = 2 if cf else 1

        def cat(xs):
            return xs[0] if len(xs) == 1 else torch.cat(xs, dim=tdim)

        a, d = [c[1] for c in calls], cat([c[2] for c in calls]).to(torch.float32)
        if scale != 1:
            d = d * scale
        rec.rows(self.label, a[0].shape[0], p)
        if cf and not isinstance(m, _BatchNorm) and rec.conv_forms[self.label] != "factors":
            # dense weight: per call, a convolution over the batch as groups
            w, i = 0, 0
            for c in calls:
                t = c[2].shape[2]
                if rec.conv_forms[self.label] == "dense":
                    w = w + _conv_weight(m, c[1], d[:, :, i:i + t].reshape(c[3]))
                i += t
            for entry, attr, _ in self.params:
                if attr == "bias":
                    rec.put(entry, "dense", {"rows": d.sum(dim=2)}, scale)
                else:
                    rec.put(entry, "dense", {"rows": w}, scale)
            return
        a = cat(a)
        for entry, attr, _ in self.params:
            if attr == "bias":
                rec.put(entry, "dense", {"rows": d.sum(dim=tdim).reshape(n, -1)}, scale)
                continue
            if isinstance(m, (nn.LayerNorm, _BatchNorm)):
                rec.put(entry, "dense", {"rows": (d * a.to(torch.float32)).sum(dim=tdim).reshape(n, -1)}, scale)
                continue
            if isinstance(m, nn.Embedding):
                t, fin, fout = a.shape[1], m.num_embeddings, d.shape[2]
                if m.padding_idx is not None:  # no gradient flows to the padding row
                    d = d * (a != m.padding_idx).unsqueeze(-1)
            elif cf:
                t, fin, fout = a.shape[2], a.shape[1], d.shape[1]
            else:
                t, fin, fout = a.shape[1], a.shape[2], d.shape[2]
            groups = getattr(m, "groups", 1)
            form = rec.forms.get(entry)
            if form is None:
                form = "factors" if groups == 1 and t * (fin + fout) <= fin * fout else "dense"
            if isinstance(m, nn.Embedding):
                if form == "factors":  # A: one-hot tokens
                    onehot = torch.zeros(n, t, fin).scatter_(2, a.unsqueeze(-1), 1.0)
                    rec.put(entry, "factors", {"A": onehot, "Delta": d}, scale, exact=("A",))
                else:  # dense (dim, vocabulary): each token's output gradient added to its column
                    g = torch.zeros(n, fin, fout).scatter_add_(1, a.unsqueeze(-1).expand(-1, -1, fout), d)
                    rec.put(entry, "dense", {"rows": g.transpose(1, 2).reshape(n, -1)}, scale)
                continue
            a = a.to(torch.float32)
            if form == "factors":
                rec.put(entry, "factors", {"A": a.transpose(1, 2), "Delta": d.transpose(1, 2)} if cf else
                        {"A": a, "Delta": d}, scale)
            else:
                rec.put(entry, "dense", {"rows": torch.bmm(d.transpose(1, 2), a).reshape(n, -1)}, scale)


def _conv_weight(m, x, g):
    """Per-example weight gradients (N, out * in/groups * k) of convolution
    m from its input x (N, C, ...) and output gradient g (N, out, ...): one
    convolution with the batch as groups, in PyTorch's weight layout (a
    grouped convolution's groups stacked)."""
    n, c, o = x.shape[0], m.in_channels, m.out_channels
    fn = torch.nn.grad.conv1d_weight if isinstance(m, nn.Conv1d) else torch.nn.grad.conv2d_weight
    padding = 0 if m.padding == "valid" else m.padding
    w = fn(x.to(torch.float32).reshape(1, n * c, *x.shape[2:]), (n * o, c // m.groups, *m.kernel_size),
           g.reshape(1, n * o, *g.shape[2:]), stride=m.stride, padding=padding, dilation=m.dilation,
           groups=n * m.groups)
    return w.reshape(n, -1)


# -- generic units: any module, re-run per example -----------------------------

class _Call:
    """One recorded forward call of a generic module."""

    def __init__(self, p, names, counts, leaves, spec, dims):
        self.p = p
        self.names, self.counts = names, counts  # bound argument names, leaves per argument
        self.leaves, self.spec, self.dims = leaves, spec, dims
        self.outs, self.odims, self.grads = [], [], []


class _Generic:
    """A module whose own parameters are captured by re-running it on each
    example's recorded inputs with the example's output gradient."""

    generic = True

    def __init__(self, label, module, params):
        self.label, self.module = label, module
        self.params = params  # [(entry name, name inside module, parameter)]
        self.calls = []
        self.method = "bs1" if isinstance(module, nn.RNNBase) else "generic"
        self.vmap_error = None
        self.signature = None

    def what(self):
        t = type(self.module).__name__
        return self.label if self.label == t else f"{self.label} ({t})"

    def schema(self):
        out = []
        for entry, local, p in self.params:
            kind = "bias" if p.dim() == 1 and local.rsplit(".", 1)[-1].endswith("bias") else "other"
            out.append({"name": entry, "kind": kind, "shape": list(p.shape) or [1]})
        return out

    def stored(self, attr, g):
        return g.reshape(-1)

    def attach(self, rec, root=False):
        """Wraps the module's forward (an instance attribute, removed by the
        returned function) so that its calls are recorded."""
        m = self.module
        had = "forward" in m.__dict__
        old = m.__dict__.get("forward")
        orig = m.forward
        if self.signature is None:
            self.signature = inspect.signature(orig)
        if root:
            rec.root_unit = (self, orig)
        else:
            def forward(*args, **kwargs):
                if rec.cap._suspended or not torch.is_grad_enabled():
                    return orig(*args, **kwargs)
                return self.call(rec, orig, args, kwargs)

            m.forward = forward

        def restore():
            if root:
                return
            if had:
                m.forward = old
            else:
                del m.forward

        return restore

    # Batch dimensions: the batch is dimension 0, except where a module says
    # otherwise (batch_first=False).

    def in_dim(self, arg, t, n):
        m = self.module
        if isinstance(m, nn.MultiheadAttention):
            if arg in ("query", "key", "value"):
                if t.dim() != 3:
                    raise ValueError(f"gvdb_capture: {self.label}: unbatched MultiheadAttention input is not captured")
                return 0 if m.batch_first else 1
            if arg == "attn_mask" and t.dim() == 3:
                raise ValueError(f"gvdb_capture: {self.label}: a 3-D attn_mask (batch x heads) is not captured; "
                                 "pass a 2-D attn_mask with key_padding_mask")
            if arg == "attn_mask":
                return None
            return 0  # key_padding_mask
        if isinstance(m, nn.RNNBase):
            if arg == "input":
                if t.dim() != 3:
                    raise ValueError(f"gvdb_capture: {self.label}: unbatched recurrent input is not captured")
                return 0 if m.batch_first else 1
            return 1  # hx: (layers, N, hidden)
        return 0 if t.dim() > 0 and t.shape[0] == n else None

    def out_dim(self, k, t, n):
        m = self.module
        if isinstance(m, nn.MultiheadAttention):
            return (0 if m.batch_first else 1) if k == 0 else 0
        if isinstance(m, nn.RNNBase):
            return (0 if m.batch_first else 1) if k == 0 else 1
        return 0 if t.dim() > 0 and t.shape[0] == n else None

    def call(self, rec, orig, args, kwargs):
        """Runs and records one call."""
        if isinstance(self.module, nn.RNNBase) and args and isinstance(args[0], nn.utils.rnn.PackedSequence):
            raise ValueError(f"gvdb_capture: {self.label}: a PackedSequence input is not captured; pass the padded "
                             "batch (and mask the loss)")
        p = rec.pass_index()
        n = rec.passes[p]["n"]
        bound = self.signature.bind(*args, **kwargs)
        names, counts, leaves = [], [], []
        for name, v in bound.arguments.items():
            lv, _ = tree_flatten(v)
            names.append(name)
            counts.append(len(lv))
        leaves, spec = tree_flatten([v for v in bound.arguments.values()])
        argof = [nm for nm, c in zip(names, counts) for _ in range(c)]
        if n is None:
            first = next((t for t in leaves if torch.is_tensor(t)), None)
            if first is None:
                raise ValueError(f"gvdb_capture: {self.label}: no tensor input")
            i = next(i for i, t in enumerate(leaves) if t is first)
            d = self.in_dim(argof[i], first, first.shape[0] if first.dim() else 1)
            n = first.shape[d] if d is not None else 1
            rec.passes[p]["n"] = n
        dims = []
        for i, t in enumerate(leaves):
            if not torch.is_tensor(t):
                dims.append(None)
                continue
            d = self.in_dim(argof[i], t, n)
            if d is not None and t.shape[d] != n:
                raise ValueError(f"gvdb_capture: {self.label}: argument {argof[i]} has {t.shape[d]} examples in "
                                 f"dimension {d}, the pass has {n}")
            dims.append(d)
            leaves[i] = t.detach().clone()
        call = _Call(p, names, counts, leaves, spec, dims)
        out = orig(*args, **kwargs)
        outs, _ = tree_flatten(out)
        for k, t in enumerate(outs):
            if not torch.is_tensor(t) or not t.is_floating_point():
                call.outs.append(None)
                call.odims.append(None)
                call.grads.append(None)
                continue
            d = self.out_dim(k, t, n)
            if d is not None and (t.dim() <= d or t.shape[d] != n):
                d = None
            call.outs.append(t.detach().clone() if d is not None else None)
            call.odims.append(d)
            call.grads.append(None)
            if t.requires_grad:
                def grad_hook(g, k=k):
                    if call.odims[k] is None:
                        call.grads[k] = "unbatched"
                    else:
                        call.grads[k] = g.detach() if call.grads[k] is None else call.grads[k] + g.detach()
                    rec.fired(p)

                t.register_hook(grad_hook)
        self.calls.append(call)
        return out

    def rebuild(self, call, leaves):
        values = tree_unflatten(leaves, call.spec)
        bound = inspect.BoundArguments(self.signature, collections.OrderedDict(zip(call.names, values)))
        return bound.args, bound.kwargs

    def finish(self, rec, p, n, scale):
        calls = [c for c in self.calls if c.p == p]
        self.calls = [c for c in self.calls if c.p != p]
        if not calls:
            raise RuntimeError(f"gvdb_capture: {self.what()} was not called in forward "
                               f"pass {p + 1} of the snapshot, but its parameters are captured: call the module "
                               "itself (not only its parameters), or pass ignore=[...]")
        total = None
        for c in calls:
            for k, g in enumerate(c.grads):
                if isinstance(g, str):
                    raise ValueError(f"gvdb_capture: {self.label}: output {k} has no batch dimension but reached "
                                     "the loss; its per-example gradients cannot be told apart")
            gi = [k for k, g in enumerate(c.grads) if g is not None]
            if not gi:
                continue  # no output reached the loss: zero gradients
            g = self.per_example(rec, c, gi, n, scale)
            total = g if total is None else [a + b for a, b in zip(total, g)]
        method = self.method
        for j, (entry, _, prm) in enumerate(self.params):
            rows = total[j] if total is not None else torch.zeros(n, prm.numel())
            rec.put(entry, method, {"rows": rows.reshape(n, -1).to(torch.float32)}, scale)
        rec.rows(self.label, n, p)

    def per_example(self, rec, c, gi, n, scale):
        """The per-example gradients [(n, *shape) per parameter] of one call."""
        buffers = [(b, b.detach().clone()) for b in self.module.buffers()]
        devices = sorted({t.device.index for t in list(c.leaves) + [q for _, _, q in self.params]
                          if torch.is_tensor(t) and t.is_cuda})
        rec.cap._suspended = True
        try:
            with torch.random.fork_rng(devices=devices):
                if self.method == "generic":
                    try:
                        return self.run_vmap(c, gi, n, scale)
                    except _Mismatch:
                        raise
                    except Exception as e:  # vmap cannot run this module: batch-size-1 passes
                        self.vmap_error = f"{type(e).__name__}: {e}"
                        self.method = "bs1"
                        for b, v in buffers:
                            b.copy_(v)
                return self.run_bs1(c, gi, n, scale)
        except _Mismatch as e:
            raise ValueError(f"gvdb_capture: {self.what()}: re-running its forward on "
                             f"each example does not reproduce the pass's output ({e}): the module is random "
                             "(dropout: set p=0 or eval mode for the snapshot's pass) or keeps state between calls; "
                             "pass ignore=[...] to leave its parameters out") from None
        finally:
            rec.cap._suspended = False
            with torch.no_grad():
                for b, v in buffers:
                    b.copy_(v)

    def compare(self, c, k, got):
        want = c.outs[k].movedim(c.odims[k], 0)
        if got.shape != want.shape:
            raise _Mismatch(f"output {k} has shape {tuple(got.shape)} per pass, want {tuple(want.shape)}")
        diff, scale = _difference(got.to(want.dtype), want)
        if not diff <= _RECOMPUTE_TOL * scale + 1e-30:
            raise _Mismatch(f"output {k} differs by {diff:.3g}, its largest value {scale:.3g}")

    def run_vmap(self, c, gi, n, scale):
        vmap, grad, functional_call = _functorch()
        own = {local: prm.detach() for _, local, prm in self.params}
        bidx = [i for i, d in enumerate(c.dims) if d is not None]
        cmp = [k for k, o in enumerate(c.outs) if o is not None]
        module = self.module

        def f(params, bl, dl):
            leaves = list(c.leaves)
            for j, i in enumerate(bidx):
                leaves[i] = bl[j].unsqueeze(c.dims[i])
            args, kwargs = self.rebuild(c, leaves)
            outs, _ = tree_flatten(functional_call(module, params, args, kwargs))
            s = 0
            for j, k in enumerate(gi):
                s = s + (outs[k].squeeze(c.odims[k]) * dl[j]).sum()
            return s, tuple(outs[k].squeeze(c.odims[k]) for k in cmp)

        with torch.no_grad():
            g, aux = vmap(grad(f, has_aux=True), in_dims=(None, tuple(c.dims[i] for i in bidx),
                                                          tuple(c.odims[k] for k in gi)))(
                own, tuple(c.leaves[i] for i in bidx), tuple(c.grads[k] * scale for k in gi))
        for k, got in zip(cmp, aux):
            self.compare(c, k, got)
        return [g[local] for _, local, _ in self.params]

    def run_bs1(self, c, gi, n, scale):
        params = [prm for _, _, prm in self.params]
        cmp = [k for k, o in enumerate(c.outs) if o is not None]
        rows = [[] for _ in params]
        got = {k: [] for k in cmp}
        m = self.module
        cudnn_off = isinstance(m, nn.RNNBase) and not m.training and any(prm.is_cuda for prm in params)
        # cuDNN's recurrent backward runs only in train mode
        with torch.backends.cudnn.flags(enabled=False) if cudnn_off else contextlib.nullcontext():
            for i in range(n):
                leaves = [t.narrow(d, i, 1) if d is not None else t for t, d in zip(c.leaves, c.dims)]
                args, kwargs = self.rebuild(c, leaves)
                with torch.enable_grad():
                    outs, _ = tree_flatten(m(*args, **kwargs))
                    ys = [outs[k] for k in gi]
                    gs = [c.grads[k].narrow(c.odims[k], i, 1) * scale for k in gi]
                    grads = torch.autograd.grad(ys, params, gs, allow_unused=True)
                for j, (g, prm) in enumerate(zip(grads, params)):
                    rows[j].append(torch.zeros_like(prm) if g is None else g.detach())
                for k in cmp:
                    got[k].append(outs[k].detach().movedim(c.odims[k], 0))
        for k in cmp:
            self.compare(c, k, torch.cat(got[k], dim=0))
        return [torch.stack(r) for r in rows]


class _Mismatch(Exception):
    pass


def _plan(model, ignore):
    """The units capturing model's trainable parameters (less ignore), in
    module order."""
    attention = [k for k, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    units = []
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm) and m.running_mean is None:
            raise _bn_refusal(name, m)
        if any(name.startswith(k + ".") for k in attention):
            continue  # nn.MultiheadAttention uses out_proj's weight without calling it: one unit
        recurse = isinstance(m, nn.MultiheadAttention)
        own = [(f"{name}.{p}" if name else p, p, t) for p, t in m.named_parameters(recurse=recurse)
               if t.requires_grad]
        own = [o for o in own if o[0] not in ignore]
        if not own:
            continue
        if not recurse and _is_fast(name, m):
            label = name or "layer0"
            units.append(_Fast(label, m, [(f"{label}.{p}", p, t) for _, p, t in own]))
        else:
            units.append(_Generic(name or type(m).__name__, m, own))
    return units


class _Recorder:
    """One model's captured values in one snapshot: forward passes, their
    per-example gradients written into the snapshot's directory as each
    pass ends, and the checks."""

    def __init__(self, cap, model, units, prefix, tmp, n, check_sums):
        self.cap, self.model, self.units, self.prefix, self.tmp, self.n = cap, model, units, prefix, tmp, n
        self.check_sums = check_sums
        self.passes = []  # {"n": examples or None, "fired": bool, "done": bool}
        self.parts = {}  # (entry, key) -> [(path, shape)]
        self.forms = {}  # entry -> how it was captured
        self.finite = {}
        self.sums, self.bounds, self.totals = {}, {}, {}
        self.seen = {}  # unit label -> examples
        self.conv_forms = {}  # convolution label -> "factors", "dense" or "bias" (its weight is not captured)
        self.root_unit = None
        self.undo = []

    def attach(self):
        for u in self.units:
            u.calls = []
            if u.generic:
                self.undo.append(u.attach(self, root=u.module is self.model))
            else:
                for h in u.attach(self):
                    self.undo.append(h.remove)
        m = self.model
        had, old, orig = "forward" in m.__dict__, m.__dict__.get("forward"), m.forward
        root = self.root_unit

        def forward(*args, **kwargs):
            if self.cap._suspended or not torch.is_grad_enabled():
                return orig(*args, **kwargs)
            leaves, _ = tree_flatten((args, kwargs))
            first = next((t for t in leaves if torch.is_tensor(t) and t.dim() > 0), None)
            self.begin_pass(first.shape[0] if first is not None else None)
            self.cap._check_modes(m, orig, args, kwargs)
            if root is not None:
                return root[0].call(self, orig, args, kwargs)
            return orig(*args, **kwargs)

        m.forward = forward

        def restore():
            if had:
                m.forward = old
            else:
                del m.forward

        self.undo.append(restore)
        if self.check_sums:
            for u in self.units:
                for entry, attr, prm in u.params:
                    def hook(g, u=u, entry=entry, attr=attr):
                        if not self.cap._suspended:
                            s = u.stored(attr, g.detach()).to(torch.float64)
                            self.totals[entry] = s if entry not in self.totals else self.totals[entry] + s

                    self.undo.append(prm.register_hook(hook).remove)

    def detach(self):
        for f in reversed(self.undo):
            f()
        self.undo = []

    # -- passes --

    def begin_pass(self, n):
        for p, ps in enumerate(self.passes):
            if not ps["done"] and ps["fired"]:
                self.finish_pass(p)
        self.passes.append({"n": n, "fired": False, "done": False})

    def pass_index(self):
        if not self.passes:
            self.passes.append({"n": None, "fired": False, "done": False})
        return len(self.passes) - 1

    def fired(self, p):
        self.passes[p]["fired"] = True

    def finish_pass(self, p):
        ps = self.passes[p]
        if not ps["fired"]:
            raise RuntimeError(f"gvdb_capture: no gradient reached the model in forward pass {p + 1} of the snapshot: "
                               "run the model's forward and loss.backward() inside the with block")
        if ps["n"] is None:  # the model itself was not called: the first layer's examples
            ps["n"] = next((c[1].shape[0] for u in self.units if not u.generic for c in u.calls if c[0] == p), None)
        n = ps["n"]
        scale = n if self.cap.reduction == "mean" else 1
        for u in self.units:
            u.finish(self, p, n, scale)
        ps["done"] = True

    def rows(self, label, rows, p):
        if rows != self.passes[p]["n"]:
            raise ValueError(f"gvdb_capture: {label} saw {rows} examples in forward pass {p + 1}, whose batch has "
                             f"{self.passes[p]['n']}")
        self.seen[label] = self.seen.get(label, 0) + rows

    def put(self, entry, form, files, scale, exact=()):
        """Writes one pass's arrays of an entry (a part file per key; keys in
        exact need no check for NaN and Inf)."""
        if self.forms.setdefault(entry, form) != form:
            raise RuntimeError(f"gvdb_capture: {entry} captured as {self.forms[entry]} and then as {form}")
        finite = all(_finite(t) for k, t in files.items() if k not in exact)
        self.finite[entry] = self.finite.get(entry, True) and finite
        if self.check_sums:
            if "rows" in files:
                r = files["rows"]
                s = r.sum(dim=0, dtype=torch.float64)
                b = float(r.norm(dim=1).sum())
            else:
                a, d = files["A"], files["Delta"]
                s = torch.einsum("nti,nto->oi", a.double(), d.double()).reshape(-1)
                b = float((a.norm(dim=2) * d.norm(dim=2)).sum())
            self.sums[entry] = s / scale + (self.sums[entry] if entry in self.sums else 0)
            self.bounds[entry] = self.bounds.get(entry, 0.0) + b / scale
        for key, t in files.items():
            parts = self.parts.setdefault((entry, key), [])
            v = np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32))
            path = os.path.join(self.tmp, f".part{len(parts)}." + self.prefix + _file_name(entry) + f".{key}.npy")
            np.save(path, v)
            parts.append((path, v.shape))

    def finish(self):
        """Ends the snapshot's passes; returns its manifest entries (schema
        order), the entries with NaN or Inf values, and the pass count."""
        if not self.passes:
            raise RuntimeError("gvdb_capture: nothing was captured in the snapshot: run the model's forward and "
                               "loss.backward() inside the with block")
        for p, ps in enumerate(self.passes):
            if not ps["done"]:
                self.finish_pass(p)
        for label, rows in self.seen.items():
            if rows != self.n:
                raise ValueError(f"gvdb_capture: {self.n} ids for {rows} examples seen in {len(self.passes)} forward "
                                 f"pass(es) of the snapshot ({label})")
        if self.check_sums:
            self.check_totals()
        entries = []
        for u in self.units:
            for s in u.schema():
                e = {"name": s["name"], "files": {}, "shapes": {}}
                for key in ("A", "Delta", "rows"):
                    if (s["name"], key) in self.parts:
                        file = self.prefix + _file_name(s["name"]) + f".{key}.npy"
                        e["shapes"][key] = _assemble(self.parts[(s["name"], key)], os.path.join(self.tmp, file))
                        e["files"][key] = file
                e["capture"] = self.forms[s["name"]]  # factors, dense, generic or bs1
                entries.append(e)
        nonfinite = [e["name"] for e in entries if not self.finite.get(e["name"], True)]
        return entries, nonfinite, len(self.passes)

    def check_totals(self):
        bad = []
        for u in self.units:
            for entry, _, _ in u.params:
                if not self.finite.get(entry, True):
                    continue  # NaN or Inf: warned about
                s = self.sums.get(entry)
                t = self.totals.get(entry)
                if t is None:
                    t = torch.zeros_like(s)
                err = float((s - t).norm())
                if not err <= _SUM_TOL * self.bounds[entry] + 1e-12 * float(t.norm()) + 1e-30:
                    bad.append(f"{entry} (captured sum {float(s.norm()):.4g}, autograd {float(t.norm()):.4g})")
        if bad:
            raise ValueError("gvdb_capture: the captured per-example gradients do not add up to the gradient "
                             f"autograd computed for {', '.join(bad)}: the parameter is also used outside its "
                             "module's forward (tied weights), or the loss has a term in the parameter itself (a "
                             "penalty: leave it out of the snapshot's loss); pass ignore=[...] to leave it out")


def _difference(a, b):
    """The largest difference between a and b where both are finite, and the
    largest finite |b|; infinite if NaN or Inf sit in different places."""
    na, nb, ia, ib = torch.isnan(a), torch.isnan(b), torch.isinf(a), torch.isinf(b)
    if not (torch.equal(na, nb) and torch.equal(ia, ib) and torch.equal(a[ia], b[ib])):
        return math.inf, 0.0
    f = ~(na | ia)
    if not f.any():
        return 0.0, 0.0
    return float((a[f] - b[f]).abs().max()), float(b[f].abs().max())


def _finite(t):
    """Whether t holds no NaN or Inf (a NaN makes both extremes NaN)."""
    if t.numel() == 0:
        return True
    lo, hi = torch.aminmax(t)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def _assemble(parts, path):
    """Joins one array's part files (one per pass) into path, padding the
    positions of factors (dimension 1) with zeros to the longest pass;
    returns the shape."""
    if len(parts) == 1:
        os.replace(parts[0][0], path)
        return list(parts[0][1])
    shapes = [s for _, s in parts]
    shape = [sum(s[0] for s in shapes)] + [max(s[1] for s in shapes)] + list(shapes[0][2:])
    if len(shapes[0]) != 3:
        shape = [shape[0]] + list(shapes[0][1:])
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=tuple(shape))
    i = 0
    for file, s in parts:
        v = np.load(file, mmap_mode="r")
        if len(s) == 3:
            out[i:i + s[0], :s[1]] = v
            out[i:i + s[0], s[1]:] = 0
        else:
            out[i:i + s[0]] = v
        i += s[0]
        del v
        os.remove(file)
    out.flush()
    del out
    return shape


class Capture:
    """Writes a gvdb run directory while a PyTorch model trains.

    model: the nn.Module. out_dir: the run directory (created; it must not
    exist or be empty unless overwrite=True). loss_reduction: "mean" or
    "sum", how the training loss combines a pass's examples.
    batch_size: the training batch size (the default B of gvdb's
    statistics). The other keywords go to run.json (model, dataset,
    optimizer, lr, momentum, weight_decay, seed, params: a dict of strings).
    ignore: parameter names (as in model.named_parameters()) to leave out;
    the run records them.
    """

    def __init__(self, model, out_dir, *, loss_reduction, batch_size, model_name=None, dataset="", optimizer="",
                 lr=0.0, momentum=0.0, weight_decay=0.0, seed=0, params=None, ignore=(), overwrite=False):
        if loss_reduction not in ("mean", "sum"):
            raise ValueError(f"gvdb_capture: loss_reduction {loss_reduction!r}, want 'mean' or 'sum'")
        if int(batch_size) < 1:
            raise ValueError(f"gvdb_capture: batch_size {batch_size}, want the training batch size (>= 1)")
        self.model, self.dir, self.reduction = model, out_dir, loss_reduction
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        ignore = set(ignore)
        unknown = sorted(ignore - set(trainable))
        if unknown:
            raise ValueError(f"gvdb_capture: ignore= names {', '.join(unknown)}, which are not trainable parameters "
                             "of the model (model.named_parameters())")
        self._ignore = ignore
        self.ignored = [n for n in trainable if n in ignore]
        self.units = _plan(model, ignore)
        if not self.units:
            raise ValueError("gvdb_capture: the model has no trainable parameter to capture")
        schema = [s for u in self.units for s in u.schema()]
        for s in schema:
            _check_layer(s["name"])
        if os.path.exists(out_dir) and os.listdir(out_dir):
            if not overwrite:
                raise FileExistsError(f"gvdb_capture: {out_dir} exists and is not empty (overwrite=True replaces it)")
            shutil.rmtree(out_dir)
        os.makedirs(out_dir, exist_ok=True)
        schema = [dict(s, capture="generic" if u.generic else "hook") for u in self.units for s in u.schema()]
        cfg = {
            "format": "gvdb-run", "version": FORMAT_VERSION, "model": model_name or type(model).__name__,
            "dataset": dataset, "optimizer": optimizer, "lr": float(lr), "momentum": float(momentum),
            "weight_decay": float(weight_decay), "batch_size": int(batch_size), "seed": int(seed),
            "loss_reduction": loss_reduction, "weight_layout": "out_in", "conv_patch_order": "C,kh,kw; positions oh,ow",
            "layers": schema, "params": {str(k): str(v) for k, v in (params or {}).items()},
        }
        if self.ignored:
            cfg["ignored"] = self.ignored  # the run records what its statistics do not cover
        _write_atomic(os.path.join(out_dir, "run.json"), json.dumps(cfg, indent=2) + "\n")
        self._scalars = open(os.path.join(out_dir, "scalars.jsonl"), "a")
        self._rec = None
        self._anchor = None
        self._suspended = False
        self._checked = set()  # (model, modules' train/eval modes) checked for batch mixing
        self._sums_checked = False
        self.closed = False

    # -- snapshots ---------------------------------------------------------

    @contextlib.contextmanager
    def snapshot(self, step, ids, population="sample", **attributes):
        """Captures the forward and backward passes run inside the block.

        step: the training step. ids: the dataset indices of the snapshot's
        examples (unique, non-negative), in the order the passes see them.
        population: "sample" (a random batch of the training set) or
        "full" (all of it, in one pass or in several: one forward call of
        the model and its backward per chunk). attributes: per-example
        values, e.g. label=y, example_loss=losses (int, float or bool, one
        per example). The snapshot is written when the block ends without
        an exception.
        """
        if self.closed:
            raise RuntimeError("gvdb_capture: snapshot after close()")
        if self._rec is not None:
            raise RuntimeError("gvdb_capture: a snapshot block inside another")
        if population not in ("sample", "full"):
            raise ValueError(f"gvdb_capture: population {population!r}, want 'sample' or 'full'")
        step = int(step)
        ids = np.asarray(ids.detach().cpu() if torch.is_tensor(ids) else ids)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer) or (ids < 0).any():
            raise ValueError("gvdb_capture: ids must be a 1-D array of non-negative integers (dataset indices)")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("gvdb_capture: ids repeat an example; a snapshot holds distinct examples "
                             "(sample without replacement)")
        tmp = tempfile.mkdtemp(prefix=".tmp-step-", dir=self.dir)
        rec = _Recorder(self, self.model, self.units, "", tmp, len(ids), check_sums=not self._sums_checked)
        self._rec, self._anchor = rec, None
        written = False
        try:
            rec.attach()
            try:
                yield self
            finally:
                rec.detach()
                self._rec = None
            self._write(step, ids, population, attributes, rec, self._anchor, tmp)
            written = True
        finally:
            self._rec, self._anchor = None, None
            for u in self.units:
                u.calls = []
            if not written:
                shutil.rmtree(tmp, ignore_errors=True)
        if rec.check_sums:
            self._sums_checked = True

    @contextlib.contextmanager
    def anchor(self, model, step):
        """Inside a snapshot block: captures the same examples' gradients
        under model, a copy of the trained model holding the SVRG anchor
        parameters of training step step (<= the snapshot's). Run model's
        forward and backward on the snapshot's examples inside this block;
        gvdb's svrg_variance and svrg_nvar then measure SVRG's estimator
        on the snapshot (docs/QUERY.md)."""
        if self._rec is None:
            raise RuntimeError("gvdb_capture: anchor() belongs inside a snapshot block")
        if self._anchor is not None:
            raise RuntimeError("gvdb_capture: one anchor per snapshot")
        try:
            units = _plan(model, self._ignore)
        except ValueError:
            units = None
        want = [s["name"] for u in self.units for s in u.schema()]
        if units is None or [s["name"] for u in units for s in u.schema()] != want or \
                [type(u.module) for u in units] != [type(u.module) for u in self.units]:
            raise ValueError("gvdb_capture: the anchor model's parameters differ from the trained model's: it must "
                             "be a copy of the trained model (copy.deepcopy)")
        rec = _Recorder(self, model, units, "anchor.", self._rec.tmp, self._rec.n, check_sums=True)
        rec.attach()
        try:
            yield self
        finally:
            rec.detach()
        self._anchor = (int(step), rec)

    @contextlib.contextmanager
    def off(self):
        """A block that captures nothing (for steps without a snapshot)."""
        yield self

    def _check_modes(self, model, forward, args, kwargs):
        """Refuses batch mixing at a pass whose modules' train/eval modes
        have not been checked: BatchNorm using batch statistics, then a
        perturbation of one example."""
        key = (id(model), tuple(m.training for m in model.modules()))
        if key in self._checked:
            return
        for name, m in model.named_modules():
            if isinstance(m, _BatchNorm) and _batch_statistics(m):
                raise _bn_refusal(name, m)
        _mixing_check(self, model, forward, args, kwargs)
        self._checked.add(key)

    def _write(self, step, ids, population, attributes, rec, anchor, tmp):
        n = len(ids)
        man = {"format": "gvdb-snapshot", "version": FORMAT_VERSION, "step": step, "population": population,
               "examples": n, "ids": "ids.npy", "weight_layout": "out_in", "layers": []}
        entries, nonfinite, passes = rec.finish()
        man["layers"] = entries
        man["passes"] = passes
        np.save(os.path.join(tmp, "ids.npy"), ids.astype(np.int64))
        if anchor is not None:
            anchor_step, arec = anchor
            if not 0 <= anchor_step <= step:
                raise ValueError(f"gvdb_capture: anchor step {anchor_step} for a snapshot at step {step}")
            aentries, anonfinite, _ = arec.finish()
            man["anchor"] = {"step": anchor_step, "layers": aentries}
            nonfinite += ["anchor " + e for e in anonfinite]
        if attributes:
            man["attributes"] = {}
            for name, v in sorted(attributes.items()):
                _check_name("attribute", name)
                v = np.asarray(v.detach().cpu() if torch.is_tensor(v) else v)
                if v.shape != (n,):
                    raise ValueError(f"gvdb_capture: attribute {name} has shape {v.shape}, want ({n},)")
                if v.dtype == np.bool_:
                    v = v.astype(np.bool_)
                elif np.issubdtype(v.dtype, np.integer):
                    v = v.astype(np.int64)
                elif np.issubdtype(v.dtype, np.floating):
                    v = v.astype(np.float64)
                else:
                    raise ValueError(f"gvdb_capture: attribute {name} has dtype {v.dtype}; want int, float or bool")
                np.save(os.path.join(tmp, f"attr.{name}.npy"), v)
                man["attributes"][name] = f"attr.{name}.npy"
        _write_atomic(os.path.join(tmp, "manifest.json"), json.dumps(man, indent=2) + "\n")
        os.rename(tmp, os.path.join(self.dir, f"step-{step:020d}"))
        if nonfinite:
            warnings.warn(f"gvdb_capture: NaN or Inf gradients at step {step} in {', '.join(nonfinite)} (kept)")

    # -- scalars -----------------------------------------------------------

    def log(self, step, **values):
        """Appends the step's scalars (loss=..., accuracy=...) to scalars.jsonl."""
        row = {"step": int(step)}
        for k, v in values.items():
            _check_name("scalar", k)
            v = float(v)
            row[k] = v if math.isfinite(v) else None  # JSON has no NaN
        self._scalars.write(json.dumps(row) + "\n")
        self._scalars.flush()

    def close(self):
        """Marks the run directory complete (the file DONE)."""
        if not self.closed:
            self._scalars.close()
            open(os.path.join(self.dir, "DONE"), "w").close()
            self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.close()
        else:
            self._scalars.close()  # no DONE: the run did not finish


def _mixing_check(cap, model, forward, args, kwargs):
    """Refuses a model whose output for one example moves when another
    example's input changes. Two forward passes of the batch's first (up to
    8) examples under no_grad, the second with example 0's input perturbed,
    from the same RNG state (forked: training's RNG is untouched) and with
    the model's buffers restored afterwards."""
    leaves, spec = tree_flatten((args, kwargs))
    first = next((t for t in leaves if torch.is_tensor(t) and t.dim() > 0), None)
    if first is None:
        return
    n = first.shape[0]
    k = min(n, 8)
    if k < 2:
        return
    batched = [i for i, t in enumerate(leaves) if torch.is_tensor(t) and t.dim() > 0 and t.shape[0] == n]
    sub = list(leaves)
    for i in batched:
        sub[i] = leaves[i][:k]
    pert = list(sub)
    devices = sorted({p.device.index for p in model.parameters() if p.is_cuda})
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    cap._suspended = True
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            for i in batched:
                t = sub[i]
                if t.is_floating_point():
                    pert[i] = t.clone()
                    pert[i][0] += (1 + t.abs().max()) * torch.randn_like(t[0])
                    break
                j = next((j for j in range(1, k) if not torch.equal(t[j], t[0])), None)
                if j is not None:  # integers (tokens): example 0 takes another example's values
                    pert[i] = t.clone()
                    pert[i][0] = t[j]
                    break
            else:
                return  # nothing to perturb
            state = torch.get_rng_state()
            cuda = [torch.cuda.get_rng_state(d) for d in devices]
            a0, kw0 = tree_unflatten(sub, spec)
            y0, _ = tree_flatten(forward(*a0, **kw0))
            torch.set_rng_state(state)
            for d, s in zip(devices, cuda):
                torch.cuda.set_rng_state(s, d)
            a1, kw1 = tree_unflatten(pert, spec)
            y1, _ = tree_flatten(forward(*a1, **kw1))
    finally:
        cap._suspended = False
        with torch.no_grad():
            for b, v in buffers:
                b.copy_(v)
    checked = False
    for u, v in zip(y0, y1):
        if not torch.is_tensor(u) or not u.is_floating_point() or u.dim() == 0 or u.shape[0] != k:
            continue
        checked = True
        moved, scale = _difference(v[1:], u[1:])
        if not moved <= _RECOMPUTE_TOL * scale + 1e-30:
            raise ValueError(f"gvdb_capture: the model mixes examples across the batch: changing one example's input "
                             f"moved another example's output (by {moved:.3g}, largest output {scale:.3g}), so its "
                             "per-example gradients are not defined. Find the module that uses batch statistics (as "
                             "BatchNorm in train mode does) and run the snapshot's pass without it (eval mode), or "
                             "replace it")
    if not checked:
        warnings.warn("gvdb_capture: the model's output has no batch dimension 0, so batch mixing was not checked")


def _check_layer(name):
    if name.lower() in RESERVED:
        raise ValueError(f"gvdb_capture: layer name {name!r} is reserved by gvdb's query language")


def _file_name(layer):
    s = re.sub(r"[^A-Za-z0-9._-]", "_", layer)
    return "_" * len(s) if s.strip(".") == "" else s


def _write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
