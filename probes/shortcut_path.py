"""ShortcutPath: how much of a stage's gradient travels back along its shortcuts alone.

For each stage, from the input of its first unit whose output has the input's shape (the
stage's first *identity-shape* unit) to the output of its last unit, the instrument measures

    share = ||J_path^T g||^2 / ||g||^2,

g the real gradient of the loss at the stage's end (one ordinary backward), J_path the
Jacobian of the stage's end with respect to its start along the shortcut path only: through
every unit's shortcut h and after-addition function f, with every branch F held fixed. For
identity shortcuts this is the share of g's energy that passes every after-addition function
element by element (V1: the product of the ReLUs' masks; V2: exactly 1); for a scaled shortcut
it carries the scale (0.5 per unit: 0.25 of the energy), for a gated one the gate and its
derivative, for dropout its masks, for a 1x1 convolution its weights -- whatever the unit's
shortcut and f compute, found by autograd and not by knowing the unit.

How: a first forward of the caller's loss gives g at every stage end (``torch.autograd.grad``,
no parameter's ``.grad`` is touched); a second forward, from the same random state (the same
dropout masks), with a forward hook on every unit's ``taps.branch`` that returns the branch's
output detached, gives the path-only graph, and ``torch.autograd.grad(stage end, stage start,
grad_outputs=g)`` the path's gradient. The random state and every buffer (BN running
statistics) are put back afterwards: the model is as it was. The values of the second forward
are the first's; only the graph differs. Knows the tap contract only.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from resnet_lab.networks.taps import tapped_units

SHORTCUT_PATH_COLUMNS = ["stage", "first_index", "n_units", "energy_end", "energy_path", "share",
                         "log10_share"]


class ShortcutPath:
    """``ShortcutPath(model).measure(run_loss)``: one row per stage (``SHORTCUT_PATH_COLUMNS``).

    ``run_loss()`` runs the model forward on the caller's batch and returns the scalar loss
    (it is called twice). The model stays in the mode the caller set (train mode: BN on batch
    statistics, dropout sampling, as training sees it)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.units = tapped_units(model)
        self.stages = sorted({int(u.stage) for u in self.units})

    # ------------------------------------------------------------------ the two forwards
    def _forward(self, run_loss, *, detach_branch: bool):
        """Run ``run_loss`` with hooks; returns (loss, {unit position: (input, output)})."""
        seen, handles = {}, []

        def keep(u, name):
            def hook(module, args, out):
                seen.setdefault(u, {})[name] = out
            return hook

        for u, unit in enumerate(self.units):
            handles.append(unit.taps["input"].register_forward_hook(keep(u, "input")))
            handles.append(unit.taps["output"].register_forward_hook(keep(u, "output")))
            if detach_branch:
                handles.append(unit.taps["branch"].register_forward_hook(
                    lambda module, args, out: out.detach()))
        try:
            loss = run_loss()
        finally:
            for h in handles:
                h.remove()
        return loss, {u: (t["input"], t["output"]) for u, t in seen.items()}

    def _spans(self, tensors):
        """{stage: (position of its first identity-shape unit, of its last unit)}."""
        spans = {}
        for stage in self.stages:
            members = [u for u, unit in enumerate(self.units) if int(unit.stage) == stage]
            same = [u for u in members if tensors[u][0].shape == tensors[u][1].shape]
            if same:
                spans[stage] = (same[0], members[-1])
        return spans

    def measure(self, run_loss) -> list[dict]:
        buffers = [b.detach().clone() for b in self.model.buffers()]
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        loss, first = self._forward(run_loss, detach_branch=False)
        spans = self._spans(first)
        ends = [first[end][1] for _, end in spans.values()]
        grads = torch.autograd.grad(loss, ends, allow_unused=True)
        after_rng = torch.get_rng_state()
        after_cuda = torch.cuda.get_rng_state_all() if cuda_rng is not None else None
        del loss, first, ends
        torch.set_rng_state(cpu_rng)                      # the same dropout masks again
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        try:
            _, second = self._forward(run_loss, detach_branch=True)
            rows = []
            for (stage, (start, end)), g in zip(spans.items(), grads):
                x, out = second[start][0], second[end][1]
                path = None
                if g is not None and x.requires_grad and out.requires_grad:
                    (path,) = torch.autograd.grad(out, x, grad_outputs=g, retain_graph=True,
                                                  allow_unused=True)
                rows.append(self._row(stage, self.units[start], end - start + 1, g, path))
        finally:
            with torch.no_grad():                         # BN running statistics as they were
                for b, saved in zip(self.model.buffers(), buffers):
                    b.copy_(saved)
            torch.set_rng_state(after_rng)               # the stream as after one forward
            if after_cuda is not None:
                torch.cuda.set_rng_state_all(after_cuda)
        return rows

    @staticmethod
    def _row(stage, unit, n_units, g, path) -> dict:
        energy_end = float((g.double() ** 2).sum()) if g is not None else 0.0
        energy_path = float((path.double() ** 2).sum()) if path is not None else 0.0
        share = energy_path / energy_end if energy_end > 0 else math.nan
        log10 = math.log10(share) if share > 0 else (-math.inf if share == 0 else math.nan)
        return {"stage": stage, "first_index": int(unit.index), "n_units": int(n_units),
                "energy_end": energy_end, "energy_path": energy_path, "share": share,
                "log10_share": log10}
