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

What is captured, per snapshot and per example i of the snapshot's batch:

- nn.Linear: the layer input a_it and the gradient d_it of the example's
  own loss with respect to the layer output, at every position t (the
  dimensions between the batch and the features, flattened; a layer called
  twice in one forward pass contributes both calls' positions). The weight
  gradient is G_i = sum_t a_it d_it^T; the bias gradient, sum_t d_it, is
  stored as dense rows.
- nn.Conv2d (zero padding): the same with a_it the unfolded input patch at
  output position t, in the order (C, kh, kw), positions in row-major
  (oh, ow) order (torch.nn.functional.unfold). A grouped convolution
  (groups > 1, depthwise included) is stored dense: each group's output
  channels see their own input channels, so no single pair of factors
  exists; its weight is (out, in/groups·kh·kw). nn.Conv1d is captured as a
  Conv2d of height 1 (patches in (C, k) order).
- nn.Embedding: the same with a_it the one-hot row of token t (In = the
  vocabulary) and d_it the gradient of its output row; a padding_idx row
  gets no gradient. Its weight, (vocabulary, dim) in PyTorch, is (in, out):
  the run's out_in layout writes it as its transpose.
- A weight is stored as factors when T*(In+Out) <= In*Out, and otherwise as
  its dense per-example gradient, in the (out, in) layout (the rule gvdb's
  own trainer uses).
- nn.LayerNorm (elementwise affine): dense rows, sum_t d_it * xhat_it for
  the weight and sum_t d_it for the bias, xhat the normalized input.
- Other parameters that require gradients (BatchNorm's, whose per-example
  gradients the batch couples, or any other module's) are refused with
  their names; pass ignore=[...] to leave them out (or freeze them).

SVRG: inside a snapshot block, `with cap.anchor(anchor_model, anchor_step):`
captures the same examples' gradients under a copy of the model holding
the anchor parameters (run its forward and backward on the same batch in
that block); gvdb's svrg_variance and svrg_nvar then measure SVRG on the
snapshot.

Output gradients are captured with tensor hooks (Tensor.register_hook on
each layer's output), not full backward hooks, so in-place activations
(nn.ReLU(inplace=True)) work. With loss_reduction="mean", the captured
output gradients are multiplied by the batch size N, so that the stored
gradients are always those of each example's own loss (sum_i l_i / N is
the mean loss; its gradient with respect to example i's output is
(1/N) dl_i/dz_i).
"""

import contextlib
import json
import math
import os
import re
import shutil
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

FORMAT_VERSION = 1

# Names the query language reserves: not allowed as layer, scalar or
# attribute names.
RESERVED = {
    "step", "run", "layer", "population", "example_id", "select", "from", "where", "group", "by", "order", "limit",
    "having", "as", "and", "or", "not", "in", "glob", "between", "plot", "to", "show", "scale", "title", "desc",
    "asc", "window", "config",
}

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_name(kind, name):
    if name.lower() in RESERVED or not _NAME.match(name):
        raise ValueError(f"gvdb_capture: {kind} name {name!r} is reserved by gvdb's query language or not a name "
                         "(a letter or _, then letters, digits, _)")


class _Layer:
    """One captured module: its schema entries, what its hooks record in a
    pass (per forward call: the input side and the output gradient, both
    (N, T, ...)), and the per-example gradients written from them."""

    def __init__(self, name, module):
        self.name, self.module = name, module
        self.calls = []  # [input side, output gradient] per forward call
        self.pending = 0

    def schema(self):
        m = self.module
        out = []
        if isinstance(m, nn.Linear):
            out.append({"name": self.name + ".weight", "kind": "dense", "shape": [m.out_features, m.in_features]})
        elif isinstance(m, (nn.Conv1d, nn.Conv2d)):
            out.append({"name": self.name + ".weight", "kind": "conv",
                        "shape": [m.out_channels, m.in_channels // m.groups * math.prod(m.kernel_size)]})
        elif isinstance(m, nn.Embedding):
            # y = onehot(idx) W: W is (in, out) = (vocabulary, dim); in the
            # run's out_in layout its shape is written (dim, vocabulary).
            out.append({"name": self.name + ".weight", "kind": "dense", "shape": [m.embedding_dim, m.num_embeddings]})
        else:  # LayerNorm
            out.append({"name": self.name + ".weight", "kind": "other", "shape": list(m.normalized_shape)})
        bias = getattr(m, "bias", None)
        if bias is not None and bias.requires_grad:
            out.append({"name": self.name + ".bias", "kind": "bias", "shape": list(bias.shape)})
        return out

    def inputs(self, x):
        """The input side of one call, (N, T, ...): a layer's input (Linear),
        unfolded patches (Conv2d), token indices (Embedding) or the
        normalized input (LayerNorm)."""
        m = self.module
        x = x.detach()
        if isinstance(m, nn.Linear):
            return x.reshape(x.shape[0], -1, x.shape[-1])
        if isinstance(m, nn.Conv2d):
            padding = (0, 0) if m.padding == "valid" else m.padding
            return F.unfold(x, m.kernel_size, dilation=m.dilation, padding=padding, stride=m.stride).transpose(1, 2)
        if isinstance(m, nn.Conv1d):  # as a Conv2d of height 1
            padding = 0 if m.padding == "valid" else m.padding[0]
            return F.unfold(x.unsqueeze(2), (1, m.kernel_size[0]), dilation=(1, m.dilation[0]), padding=(0, padding),
                            stride=(1, m.stride[0])).transpose(1, 2)
        if isinstance(m, nn.Embedding):
            return x.reshape(x.shape[0], -1)
        k = len(m.normalized_shape)
        xh = F.layer_norm(x, m.normalized_shape, eps=m.eps)
        return xh.reshape(x.shape[0], -1, *x.shape[x.dim() - k:])

    def outputs(self, g):
        """The output gradient of one call, (N, T, ...)."""
        m = self.module
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):  # (N, C, ol) or (N, C, oh, ow)
            return g.reshape(g.shape[0], g.shape[1], -1).transpose(1, 2)
        if isinstance(m, nn.LayerNorm):
            k = len(m.normalized_shape)
            return g.reshape(g.shape[0], -1, *g.shape[g.dim() - k:])
        return g.reshape(g.shape[0], -1, g.shape[-1])

    def write(self, dir, n, scale, prefix=""):
        """Writes the pass's per-example gradients (output gradients times
        scale) to dir; returns the manifest entries and whether any value is
        NaN or Inf."""
        m = self.module
        a = torch.cat([c[0] for c in self.calls], dim=1)
        d = torch.cat([c[1] for c in self.calls], dim=1).to(torch.float32) * scale
        if a.shape[0] != n:
            raise ValueError(f"gvdb_capture: {n} ids for a batch of {a.shape[0]} examples")
        finite = bool(torch.isfinite(d).all())
        stem = prefix + _file_name(self.name + ".weight")
        w = {"name": self.name + ".weight", "files": {}, "shapes": {}}
        if isinstance(m, nn.LayerNorm):
            a = a.to(torch.float32)
            finite = finite and bool(torch.isfinite(a).all())
            _save(dir, w, "rows", stem + ".rows.npy", (d * a).sum(dim=1).reshape(n, -1))
        else:
            if isinstance(m, nn.Embedding):
                if m.padding_idx is not None:  # no gradient flows to the padding row
                    d = d * (a != m.padding_idx).unsqueeze(-1)
                a = F.one_hot(a, m.num_embeddings)
            a = a.to(torch.float32)
            finite = finite and bool(torch.isfinite(a).all())
            t, fin, fout = a.shape[1], a.shape[2], d.shape[2]
            groups = getattr(m, "groups", 1)
            if groups > 1:
                # Each group of output channels sees its own input
                # channels: no single pair of factors; dense, (out, in/groups)
                # per group, stacked as PyTorch's weight is.
                ag = a.reshape(n, t, groups, fin // groups)
                dg = d.reshape(n, t, groups, fout // groups)
                g = torch.einsum("ntgo,ntgi->ngoi", dg, ag).reshape(n, fout * (fin // groups))
                _save(dir, w, "rows", stem + ".rows.npy", g)
            elif t * (fin + fout) <= fin * fout:
                _save(dir, w, "A", stem + ".A.npy", a)
                _save(dir, w, "Delta", stem + ".Delta.npy", d)
            else:  # dense, PyTorch's (out, in) layout
                _save(dir, w, "rows", stem + ".rows.npy", torch.einsum("nto,nti->noi", d, a).reshape(n, fout * fin))
        entries = [w]
        bias = getattr(m, "bias", None)
        if bias is not None and bias.requires_grad:
            b = {"name": self.name + ".bias", "files": {}, "shapes": {}}
            _save(dir, b, "rows", prefix + _file_name(self.name + ".bias") + ".rows.npy", d.sum(dim=1).reshape(n, -1))
            entries.append(b)
        self.calls = []
        return entries, finite


def _supported(name, m):
    """Whether gvdb_capture captures module m (raising if it is a kind it
    captures, configured in a way it cannot)."""
    if isinstance(m, (nn.Conv1d, nn.Conv2d)):
        if m.padding_mode != "zeros" or isinstance(m.padding, str) and m.padding != "valid":
            raise ValueError(f"gvdb_capture: {name}: only convolutions with zero padding and numeric or 'valid' "
                             "padding are captured; pass ignore=[...] to leave it out")
        return True
    if isinstance(m, nn.Embedding):
        if m.max_norm is not None or m.scale_grad_by_freq:
            raise ValueError(f"gvdb_capture: {name}: an Embedding with max_norm or scale_grad_by_freq is not "
                             "captured; pass ignore=[...] to leave it out")
        return True
    if isinstance(m, nn.LayerNorm):
        return m.elementwise_affine
    return isinstance(m, nn.Linear)


class Capture:
    """Writes a gvdb run directory while a PyTorch model trains.

    model: the nn.Module. out_dir: the run directory (created; it must not
    exist or be empty unless overwrite=True). loss_reduction: "mean" or
    "sum", how the training loss combines the batch's examples.
    batch_size: the training batch size (the default B of gvdb's
    statistics). The other keywords go to run.json (model, dataset,
    optimizer, lr, momentum, weight_decay, seed, params: a dict of strings).
    ignore: parameter names (as in model.named_parameters()) to leave out.
    """

    def __init__(self, model, out_dir, *, loss_reduction, batch_size, model_name=None, dataset="", optimizer="",
                 lr=0.0, momentum=0.0, weight_decay=0.0, seed=0, params=None, ignore=(), overwrite=False):
        if loss_reduction not in ("mean", "sum"):
            raise ValueError(f"gvdb_capture: loss_reduction {loss_reduction!r}, want 'mean' or 'sum'")
        if int(batch_size) < 1:
            raise ValueError(f"gvdb_capture: batch_size {batch_size}, want the training batch size (>= 1)")
        self.model, self.dir, self.reduction = model, out_dir, loss_reduction
        self.layers = []
        covered, ignore = set(), set(ignore)
        # nn.MultiheadAttention computes its projections from their weights
        # without calling its out_proj module: no hook would fire there.
        attention = [k for k, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
        for name, m in model.named_modules():
            if any(name.startswith(k + ".") for k in attention):
                continue
            if any(p.requires_grad for p in m.parameters(recurse=False)) and _supported(name, m):
                if not m.weight.requires_grad:
                    raise ValueError(f"gvdb_capture: {name}: a frozen weight with a trained bias is not captured")
                label = name or "layer0"
                layer = _Layer(label, m)
                for s in layer.schema():
                    _check_layer(s["name"])
                if label + ".weight" in ignore:
                    continue
                self.layers.append(layer)
                covered.update(f"{name}.{p}" if name else p for p, _ in m.named_parameters(recurse=False))
        missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in covered and n not in ignore]
        if missing:
            def owner(n):
                for k in attention:
                    if n.startswith(k + "."):
                        return "MultiheadAttention, which computes its projections without calling its submodules"
                return type(model.get_submodule(n.rsplit(".", 1)[0]) if "." in n else model).__name__

            types = sorted({owner(n) for n in missing})
            raise ValueError(f"gvdb_capture: per-example gradients of {', '.join(missing)} ({', '.join(types)}) "
                             "cannot be captured (only nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding and nn.LayerNorm); pass ignore=[...] to leave them "
                             "out, or freeze them")
        if not self.layers:
            raise ValueError("gvdb_capture: the model has no nn.Linear, nn.Conv2d, nn.Embedding or nn.LayerNorm layer to capture")
        if os.path.exists(out_dir) and os.listdir(out_dir):
            if not overwrite:
                raise FileExistsError(f"gvdb_capture: {out_dir} exists and is not empty (overwrite=True replaces it)")
            shutil.rmtree(out_dir)
        os.makedirs(out_dir, exist_ok=True)
        schema = [s for l in self.layers for s in l.schema()]
        cfg = {
            "format": "gvdb-run", "version": FORMAT_VERSION, "model": model_name or type(model).__name__,
            "dataset": dataset, "optimizer": optimizer, "lr": float(lr), "momentum": float(momentum),
            "weight_decay": float(weight_decay), "batch_size": int(batch_size), "seed": int(seed),
            "loss_reduction": loss_reduction, "weight_layout": "out_in", "conv_patch_order": "C,kh,kw; positions oh,ow",
            "layers": schema, "params": {str(k): str(v) for k, v in (params or {}).items()},
        }
        _write_atomic(os.path.join(out_dir, "run.json"), json.dumps(cfg, indent=2) + "\n")
        self._scalars = open(os.path.join(out_dir, "scalars.jsonl"), "a")
        self._handles = []
        self._anchor = None
        self.closed = False

    # -- snapshots ---------------------------------------------------------

    @contextlib.contextmanager
    def snapshot(self, step, ids, population="sample", **attributes):
        """Captures the forward and backward passes run inside the block.

        step: the training step. ids: the dataset indices of the batch's
        examples (unique, non-negative), in batch order. population:
        "sample" (a random batch of the training set) or "full" (all of it,
        in one pass). attributes: per-example values, e.g. label=y,
        example_loss=losses (int, float or bool, one per example).
        The snapshot is written when the block ends without an exception.
        """
        if self.closed:
            raise RuntimeError("gvdb_capture: snapshot after close()")
        if population not in ("sample", "full"):
            raise ValueError(f"gvdb_capture: population {population!r}, want 'sample' or 'full'")
        for layer in self.layers:
            layer.calls, layer.pending = [], 0
            self._handles.append(layer.module.register_forward_hook(self._forward_hook(layer)))
        self._anchor = None
        try:
            yield self
        finally:
            for h in self._handles:
                h.remove()
            self._handles = []
        anchor, self._anchor = self._anchor, None
        self._write(int(step), ids, population, attributes, anchor)

    @contextlib.contextmanager
    def anchor(self, model, step):
        """Inside a snapshot block: captures the same examples' gradients
        under model, a copy of the trained model holding the SVRG anchor
        parameters of training step step (<= the snapshot's). Run model's
        forward and backward on the snapshot's batch inside this block;
        gvdb's svrg_variance and svrg_nvar then measure SVRG's estimator
        on the snapshot (docs/QUERY.md)."""
        if not self._handles:
            raise RuntimeError("gvdb_capture: anchor() belongs inside a snapshot block")
        if self._anchor is not None:
            raise RuntimeError("gvdb_capture: one anchor per snapshot")
        modules = dict(model.named_modules())
        layers = []
        for l in self.layers:
            name = "" if l.name == "layer0" and l.module is self.model else l.name
            m = modules.get(name)
            if m is None or type(m) is not type(l.module):
                raise ValueError(f"gvdb_capture: the anchor model has no {type(l.module).__name__} {l.name}: "
                                 "it must be a copy of the trained model (copy.deepcopy)")
            layers.append(_Layer(l.name, m))
        handles = [a.module.register_forward_hook(self._forward_hook(a)) for a in layers]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
        self._anchor = (int(step), layers)

    @contextlib.contextmanager
    def off(self):
        """A block that captures nothing (for steps without a snapshot)."""
        yield self

    def _forward_hook(self, layer):
        def hook(module, inp, out):
            if not out.requires_grad:
                return
            call = [layer.inputs(inp[0]), None]
            layer.calls.append(call)
            layer.pending += 1

            def grad_hook(g):
                call[1] = layer.outputs(g.detach())
                layer.pending -= 1

            out.register_hook(grad_hook)

        return hook

    def _write(self, step, ids, population, attributes, anchor=None):
        ids = np.asarray(ids.detach().cpu() if torch.is_tensor(ids) else ids)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer) or (ids < 0).any():
            raise ValueError("gvdb_capture: ids must be a 1-D array of non-negative integers (dataset indices)")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("gvdb_capture: ids repeat an example; a snapshot holds distinct examples "
                             "(sample without replacement)")
        n = len(ids)
        tmp = tempfile.mkdtemp(prefix=".tmp-step-", dir=self.dir)
        try:
            man = {"format": "gvdb-snapshot", "version": FORMAT_VERSION, "step": step, "population": population,
                   "examples": n, "ids": "ids.npy", "weight_layout": "out_in", "layers": []}
            np.save(os.path.join(tmp, "ids.npy"), ids.astype(np.int64))
            nonfinite = []
            scale = n if self.reduction == "mean" else 1
            for layer in self.layers:
                if not layer.calls or layer.pending:
                    raise RuntimeError(f"gvdb_capture: no gradient reached {layer.name} in the snapshot at step "
                                       f"{step}: run forward and loss.backward() inside the with block")
                entries, finite = layer.write(tmp, n, scale)
                man["layers"].extend(entries)
                if not finite:
                    nonfinite.append(layer.name)
            if anchor is not None:
                anchor_step, layers = anchor
                if not 0 <= anchor_step <= step:
                    raise ValueError(f"gvdb_capture: anchor step {anchor_step} for a snapshot at step {step}")
                man["anchor"] = {"step": anchor_step, "layers": []}
                for layer in layers:
                    if not layer.calls or layer.pending:
                        raise RuntimeError(f"gvdb_capture: no gradient reached {layer.name} of the anchor model at "
                                           f"step {step}: run its forward and backward inside the anchor block")
                    entries, finite = layer.write(tmp, n, scale, prefix="anchor.")
                    man["anchor"]["layers"].extend(entries)
                    if not finite:
                        nonfinite.append("anchor " + layer.name)
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
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if nonfinite:
            import warnings
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


def _check_layer(name):
    if name.lower() in RESERVED:
        raise ValueError(f"gvdb_capture: layer name {name!r} is reserved by gvdb's query language")


def _file_name(layer):
    s = re.sub(r"[^A-Za-z0-9._-]", "_", layer)
    return "_" * len(s) if s.strip(".") == "" else s


def _save(dir, entry, key, file, t):
    v = np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32))
    np.save(os.path.join(dir, file), v)
    entry["files"][key], entry["shapes"][key] = file, list(v.shape)


def _write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
