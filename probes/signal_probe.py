"""SignalProbe: statistics of every tapped tensor and its gradient, at every step, cheaply.

How it reads (what each part costs, and why it is built so: docs/PERFORMANCE.md):

* while the probe is in (``with probe:``) on a probed step, each Tap module's forward is the
  probe's (``recorder.TapRecorder``): it writes a few raw sums of its tensor into buffers on
  the tensor's device (``slots.Slots``, by the device's backend in ``probes.kernels``) and
  hooks its gradient, which does the same; nothing is read back, so no hook synchronises;
* ``step()`` evaluates every statistic (``probes.stats``) of every tap at once and moves the
  values to the host in one transfer; ``collect()`` turns them into rows (``rows``);
* ``every=k``: on unprobed steps nothing is installed at all.

DistributedDataParallel: the probe sees the wrapped module's taps and measures the local
rank's batch; statistics are not reduced across ranks.
"""
from __future__ import annotations

from functools import partial

import pandas as pd
import torch
from torch import nn

from resnet_lab.networks.taps import TAP_NAMES

from . import kernels
from . import stats as S
from .identity_path import IdentityPath
from .recorder import TapRecorder
from .rows import PROBE_COLUMNS, RowBuilder, empty_frame
from .tap_index import TapIndex
from .weight_inputs import WeightInputs

__all__ = ["PROBE_COLUMNS", "SignalProbe"]


def _chained(first, then, x):
    """Two forwards of one Tap in turn: of two probes that measure it, the newer's then the
    older's; of one probe, its recorder's then its identity path's."""
    return then(first(x))


class SignalProbe:
    """Record forward and backward statistics at the taps of any model built from resnet_lab units.

    Args:
        model: a module with tapped residual units (``resnet_lab.networks.taps``: each unit owns the
            five taps in ``unit.taps``; ``net.units()`` lists them in order).
        taps: which of ``input, shortcut, branch, sum, output`` to report.
        stats: which statistics to report (``probes.stats`` declares each); default
            ``DEFAULT_STATS``: all but the identity path's (``PATH_STATS``: ``path_share``,
            ``path_share_indep``, ``path_frac``, at the ``output`` tap of each stage's last
            unit; ``probes.identity_path``), which are asked for by name.
        every: probe one step in ``every``; the others cost (almost) nothing.
        weight_inputs: also record the channel statistics of every Conv2d / Linear input.
        param_grads: also record each unit's parameter-gradient norm at ``step()``.
        first_step: the number of the first step in the rows (``step`` column); later steps
            count on from it, probed or not. Steps are numbered as the training engine numbers
            its updates: step s is the s-th update, so the first forward/backward is step 1.
        pause_gc: pause Python's cyclic garbage collector from a probed step's first tap to
            ``step()`` (or leaving the ``with``); see ``recorder.CollectorPause`` for why.
        cpp_hooks: from the second probed step, measure CPU tensors and their gradients by
            taps and hooks in C++ where they are built (``probes.kernels.cpp_hooks``); False:
            by the Python ones throughout (the same statistics, bit for bit; slower).

    Use it as a context manager -- hooks exist only inside the ``with`` -- and call
    ``step()`` once after each backward (or after each forward when there is none).
    """

    def __init__(self, model: nn.Module, taps=TAP_NAMES, stats=None, every=1,
                 weight_inputs=False, param_grads=True, first_step=1, pause_gc=True, cpp_hooks=True):
        taps, stats = _checked(taps, stats, every, cpp_hooks)
        self.model, self.taps, self.stats, self.every, self.first_step = model, taps, stats, every, first_step
        self.weight_inputs, self.param_grads = weight_inputs, param_grads and "grad_norm" in stats
        self._index = TapIndex(model)
        # Taps measured: those asked for, and those the cut and path statistics read.
        cuts = [s for s in S.CUT if s.name in stats and "sum" in taps]
        paths = [s for s in S.PATH if s.name in stats and "output" in taps]
        measured = set(taps).union(*(s.taps for s in cuts + paths))
        self._taps = TapRecorder(self._index, [tap in measured for tap in TAP_NAMES],
                                 signs=bool(S.needs(stats) & {"sign_sum", "sign_sq"}),
                                 cut=any("cut_energy" in s.needs for s in cuts), cpp=cpp_hooks, pause_gc=pause_gc)
        self._weights = WeightInputs(model, self._index) if weight_inputs else None
        self._path = IdentityPath(self._index) if paths else None
        self._rows = RowBuilder(self._index, taps, stats, () if self._weights is None else self._weights.meta)
        self._records = []                   # (step, values, layout) per probed step: the state
        self._calls = 0                      # step() calls so far
        self._inside = self._active = False
        self._installed = self._saved_forwards = None   # the forwards installed, what they replaced
        self._clear_step()

    # ---- context -------------------------------------------------------------------------
    def __enter__(self):
        self._inside = True
        self._clear_step()
        self._sync_hooks()
        return self

    def __exit__(self, *exc):
        self._inside = False
        self._sync_hooks()
        self._clear_step()
        self._taps.resume_collector()
        return False

    def _clear_step(self):
        self._taps.clear_step()
        if self._path is not None:
            self._path.clear_step()
        self._active = self._calls % self.every == 0

    def _sync_hooks(self):
        """Tap functions installed exactly while inside the ``with`` on a probed step.

        Each Tap module gets an instance ``forward`` (the recorder's, Python or C++); leaving
        removes it, so the class's identity ``forward`` is back. Not module hooks: setting an
        instance attribute costs a fraction of registering a hook, and the call stays on
        PyTorch's fast path (docs/PERFORMANCE.md). Probes on one model nest: each installs its
        function in front of the one it finds and puts that one back on leaving (leave them in
        reverse order, as ``with`` blocks do).
        """
        want = self._inside and self._active
        if want and self._saved_forwards is None:
            self._installed = self._forwards()
            self._saved_forwards = [module.__dict__.get("forward") for module, _ in self._installed]
            for (module, forward), before in zip(self._installed, self._saved_forwards):
                module.__dict__["forward"] = forward if before is None else partial(_chained, forward, before)
            if self._weights is not None:
                self._weights.install()
        elif not want and self._saved_forwards is not None:
            for (module, _), before in zip(self._installed, self._saved_forwards):
                if before is None:
                    module.__dict__.pop("forward", None)
                else:
                    module.__dict__["forward"] = before
            self._saved_forwards = None
            if self._weights is not None:
                self._weights.remove()

    def _forwards(self):
        """(Tap module, its forward while the probe is in): the recorder's, followed by the
        identity path's where a path statistic is asked for."""
        forwards = self._taps.forwards()
        if self._path is None:
            return forwards
        then = self._path.forwards()
        return [(module, partial(_chained, forward, then[module]) if module in then else forward)
                for module, forward in forwards]

    # ---- per step ------------------------------------------------------------------------
    def step(self) -> bool:
        """Close one step: derive all statistics and move them to the host in one transfer.
        True when this step was probed and recorded."""
        recorded = self._active and self._record()
        self._calls += 1
        self._clear_step()
        self._sync_hooks()
        self._taps.resume_collector()
        return recorded

    def _record(self) -> bool:
        taps = self._taps
        taps.take()
        parts, layout = [], []
        for name, slots in (("forward", taps.fwd), ("backward", taps.bwd)):
            valid = slots.valid()
            if any(valid):
                parts.append(slots.finalize().flatten())
                layout.append((name, valid))
        if taps.cut is not None and taps.cut.numerators is not None and any(taps.fwd.seen):
            parts.append(taps.cut.numerators.double())
            layout.append(("cut", None))
        path = None if self._path is None else self._path.finish_step()
        if path is not None:
            parts.append(path[0])
            layout.append(("path", path[1]))
        weights = None if self._weights is None else self._weights.finish_step()
        if weights is not None:
            parts.append(weights[0])
            layout.append(weights[1])
        grad_norms = self._param_grad_norms()
        if grad_norms is not None:
            parts.append(grad_norms)
            layout.append(("params", None))
        if parts:
            host = torch.cat(parts).cpu().numpy()      # the step's one transfer
            self._records.append((self.first_step + self._calls, host, layout))
        taps.end_step()
        if self._weights is not None:
            self._weights.end_step()
        return bool(parts)

    def _param_grad_norms(self):
        """Each unit's parameter-gradient norm (``PARAMS``), or None."""
        if not self.param_grads:
            return None
        index = self._index
        grads = [p.grad for p in index.params]
        owner, numels = index.param_unit, index.param_numel
        if any(g is None for g in grads):    # some parameters got no gradient this step
            have = [i for i, g in enumerate(grads) if g is not None]
            if not have:
                return None
            grads, owner, numels = [grads[i] for i in have], owner[have], numels[have]
        sq = kernels.for_device(grads[0].device).grouped_sq_sums(grads, owner, len(index.units), numels)
        return S.PARAMS[0].formula(sq)

    # ---- results -------------------------------------------------------------------------
    def collect(self) -> pd.DataFrame:
        """All recorded steps as a tidy DataFrame (DESIGN.md probe schema, plus ``layer``)."""
        frames = [self._rows.frame(*record) for record in self._records]
        return pd.concat(frames, ignore_index=True) if frames else empty_frame()

    def latest(self) -> pd.DataFrame:
        """The rows of the last probed step (empty before one)."""
        return self._rows.frame(*self._records[-1]) if self._records else empty_frame()

    def state_dict(self) -> dict:
        """The probe's records (its rows to be), in a form ``torch.load(weights_only=True)``
        reads: a run resumed from a checkpoint that holds them continues the same table."""
        return {"records": [{"step": step, "values": torch.from_numpy(host),
                             "layout": [[kind, None if seen is None else torch.tensor(seen)] for kind, seen in layout]}
                            for step, host, layout in self._records]}

    def load_state_dict(self, state: dict):
        """Continue from ``state_dict()``'s records (of a probe of the same model and arguments)."""
        self._records = [(r["step"], r["values"].numpy(),
                          [(kind, None if seen is None else seen.tolist()) for kind, seen in r["layout"]])
                         for r in state["records"]]

    def nbytes(self) -> int:
        """Bytes of device buffers the probe holds between steps, with the backends' scratch
        (the Triton kernels' partial sums, kept per CUDA stream, shared by all probes)."""
        own = self._taps.nbytes() + (0 if self._weights is None else self._weights.nbytes()) \
            + (0 if self._path is None else self._path.nbytes())
        return own + kernels.scratch_bytes()


def _checked(taps, stats, every, cpp_hooks):
    """The arguments as tuples; ValueError naming the valid choices."""
    taps = (taps,) if isinstance(taps, str) else tuple(taps)
    bad = [t for t in taps if t not in TAP_NAMES]
    if bad:
        raise ValueError(f"unknown tap {bad[0]!r}; valid: {', '.join(TAP_NAMES)}")
    stats = S.DEFAULT_STATS if stats is None else ((stats,) if isinstance(stats, str) else tuple(stats))
    bad = [s for s in stats if s not in S.ALL_STATS]
    if bad:
        raise ValueError(f"unknown stat {bad[0]!r}; valid: {', '.join(S.ALL_STATS)}")
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive integer, got {every!r}")
    if not isinstance(cpp_hooks, bool):
        raise ValueError(f"cpp_hooks must be True or False, got {cpp_hooks!r}")
    return taps, stats
