"""Will a net fit? The memory a training step needs at least, known before anything starts.

A net is built on PyTorch's ``meta`` device (shapes, no storage) and one forward pass is run
there: its parameters and the outputs of its layers give a lower bound of a training step's
memory -- fp32 weights, gradients, momentum and a checkpoint's copy of weights and momentum
(6 x parameters), and the outputs autograd keeps for the backward pass (those of the convolutions
and ReLUs; a BatchNorm's output is freed once the next layer has read it). A run whose largest net
needs more than the device has free is refused before it starts, in one line; what the bound
misses (the allocator's slack, the probe) is left to the one-line out-of-memory error.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..networks.taps import Tap

FLOAT_BYTES = 4
STATE_COPIES = 6          # weights, gradients, momentum, a checkpoint's weights and momentum


def training_bytes(model: nn.Module, input_shape, batch_size: int) -> int:
    """Bytes one training step of ``model`` (on the meta device) needs at least on a batch of
    ``batch_size`` inputs of ``input_shape`` (C, H, W)."""
    parameters = sum(p.numel() for p in model.parameters())
    kept = [0]

    def count(module, args, output):
        if isinstance(output, torch.Tensor):
            kept[0] += output.numel()
    leaves = [m for m in model.modules() if not list(m.children())
              and not isinstance(m, (Tap, nn.Identity, nn.modules.batchnorm._BatchNorm))]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            model(torch.empty(batch_size, *input_shape, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return FLOAT_BYTES * (STATE_COPIES * parameters + kept[0])


def available_bytes(device) -> int | None:
    """Free memory of ``device``: the GPU's (``mem_get_info``) or the machine's
    (MemAvailable, /proc/meminfo); None where it cannot be read."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_fits(need: int, device, what: str, advice: str):
    """ValueError if ``need`` bytes exceed what ``device`` has free."""
    free = available_bytes(device)
    if free is not None and need > free:
        raise ValueError(f"{what} needs at least {gigabytes(need)} to train (weights, gradients, "
                         f"momentum, activations) and {torch.device(device).type} has "
                         f"{gigabytes(free)} free: {advice}")


def gigabytes(n: int) -> str:
    return f"{n / 2**30:,.1f} GB" if n < 2**40 else f"{n / 2**40:,.1f} TB"
