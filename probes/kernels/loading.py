"""What loading a compiled backend checks: that it computes every raw sum of ``RAW_ROW`` (and
where each goes in the row: the positions it is given come from ``RAW_ROW`` alone), and that it
writes the torch reference's values, within fp32's bound, on one small fixed tensor.
"""
from __future__ import annotations

import torch

from ..stats import RAW_ROW
from .torch_ops import ROW_SUMS, TorchBackend

U = 2.0 ** -24      # fp32's unit roundoff


class BackendMismatch(RuntimeError):
    """A compiled backend does not compute the raw sums ``probes.stats`` declares, or not their values."""


def row_positions(backend: str, sums, where: str) -> tuple:
    """Where each raw sum a backend computes (``sums``, in its order) goes in a row of
    ``RAW_ROW`` (-1: not in the row); refuses a ``RAW_ROW`` naming a sum it does not compute."""
    missing = [name for name in RAW_ROW if name not in sums]
    if missing:
        raise BackendMismatch(f"probes: {backend} does not compute the raw sum(s) {missing} of "
                              f"probes/stats.py's RAW_ROW = {RAW_ROW} (it computes {tuple(sums)}): "
                              f"add them to {where} (and rebuild it: pip install -e .)")
    return tuple(RAW_ROW.index(name) if name in RAW_ROW else -1 for name in sums)


def fixed_tensors(device) -> tuple:
    """(t, h): two fp32 (2, 3, 4, 5) tensors of fixed values -- positives, negatives and exact
    zeros in t, so every raw sum and the masked energy have something to count."""
    t = torch.linspace(-3.0, 5.0, 120).reshape(2, 3, 4, 5)
    t.view(-1)[::7] = 0.0
    h = torch.linspace(2.0, -1.5, 120).reshape(2, 3, 4, 5)
    return t.to(device), h.to(device)


def _bound(n: int, magnitude: torch.Tensor) -> torch.Tensor:
    """fp32's error bound for a sum of n terms whose absolute values add up to ``magnitude``."""
    return n * U / (1 - n * U) * magnitude


def _reference(t: torch.Tensor, h: torch.Tensor) -> dict:
    """{raw sum: (float64 value, bound)} by the torch path's formulas in float64."""
    x, hh = t.double().cpu(), h.double().cpu()
    flat, signs = x.reshape(-1), torch.sign(x.reshape(-1))
    out = {}
    for name in RAW_ROW:
        value, magnitude = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
        ROW_SUMS[name](flat, signs, value)
        ROW_SUMS[name](flat.abs(), signs.abs(), magnitude)
        out[name] = (value, _bound(flat.numel(), magnitude))
    per_channel = x.transpose(0, 1).reshape(x.shape[1], -1)
    out["s1c"] = (per_channel.sum(1), _bound(per_channel.shape[1], per_channel.abs().sum(1)))
    energy = (hh.reshape(-1)[flat == 0] ** 2).sum()
    out["cut_energy"] = (energy, _bound(flat.numel(), energy))
    return out


def check_values(backend: TorchBackend, device, where: str) -> None:
    """Refuse ``backend`` unless its raw sums of a fixed tensor on ``device`` (channel sums, the
    row, the masked energy, in one pass as a probe reads a unit's output) equal the torch
    path's in float64 within fp32's bound."""
    t, h = fixed_tensors(device)
    s1c = torch.zeros(t.shape[1], device=device)
    row = torch.zeros(len(RAW_ROW), device=device)
    energy = torch.zeros((), device=device)

    buffers = {}

    def scratch(k, like):                    # reused, as the probe's: buffer 0 keeps sign(t)
        if k not in buffers:
            buffers[k] = torch.empty(like.numel(), device=like.device)
        return buffers[k]
    backend.raw_sums(t, s1c, (row, list(row)), scratch, masked=(h, energy))
    got = {"s1c": s1c, **dict(zip(RAW_ROW, row)), "cut_energy": energy}
    for name, (want, bound) in _reference(t, h).items():
        error = (got[name].double().cpu() - want).abs()
        if not bool((error <= bound).all()):
            raise BackendMismatch(f"probes: {backend.name} backend's {name} of a fixed tensor is "
                                  f"{got[name].tolist()}, the torch path's (float64) "
                                  f"{want.tolist()}, beyond fp32's bound {bound.tolist()}: fix "
                                  f"{where} (and rebuild it: pip install -e .)")
