"""The training engine: the paper's recipe, resumable, on one CPU or many GPUs.

``train(model, data, run, TrainSettings(...))`` runs SGD (momentum 0.9, weight decay 1e-4 on
every parameter) with a ``resnet_lab.engine.schedule.Schedule`` (default: the paper's, scaled to
the run) and writes, when ``run`` is a ``RunDir``:

* rows in the DESIGN.md schema ``step, epoch, split, metric, value`` (``metrics.csv.gz``):
  every step a train ``loss``, ``error``, ``lr`` and ``seconds``; every ``eval_every`` steps
  a test ``loss`` and ``error``. ``step`` counts updates: train rows of step s describe the
  s-th update (its batch, its lr), test rows of step s the weights after s updates;
* each callback's tables (``<name>.csv.gz``; e.g. a probe's rows, numbered as the train rows);
* ``checkpoint.pt`` every ``checkpoint_every`` steps (atomically): weights, optimizer, step,
  the warm-up's end, the RNG states, all rows so far and each callback's state. Batches are a
  pure function of (seed, step), so ``train`` started again on the same folder continues from
  the checkpoint and ends, on CPU, with bitwise the same weights and rows (except ``seconds``).

Callbacks (``callbacks=[...]``) are how anything else takes part in training -- an
instrument such as ``probes.ProbeCallback``, a progress report -- without the engine knowing
it. Each is an object with any of these methods, called in the process of rank 0:

* ``on_train_start(model, step)``: training of ``model`` (unwrapped) starts after ``step``
  updates (0, or where a resumed run continues);
* ``on_step_start(step)``, ``on_after_backward(step)``, ``on_step_end(step)``: around update
  ``step`` (its number, from 1): before its forward, after its backward (before the
  optimizer's update), after the update. No evaluation forward runs in between;
* ``on_train_end()``: always, also when the run fails;
* ``state_dict()`` / ``load_state_dict(state)``: saved in every checkpoint and handed back on
  resume (``torch.load(weights_only=True)`` must read it: tensors, numbers, strings, lists,
  dicts);
* ``tables()``: {name: DataFrame} to write into the run folder at every checkpoint and end,
  and return in ``TrainResult.tables``.

Callbacks are told apart by their ``name`` attribute (else their class name).

A non-finite training or test loss is recorded, then the run stops with status ``diverged``.

Precision is said, not implied: ``precision="fp32"`` (the default; TF32 off on CUDA) or
``"bf16"`` (autocast, for speed). On CUDA the tensors are channels-last. ``config.json``
records precision, TF32, memory format and device.

Distributed: under ``torchrun`` (``setup_distributed``) the model is wrapped in
DistributedDataParallel and each rank trains on its contiguous slice of the same global batch
(augmentation drawn for the whole batch, then sliced), so the update and the reported metrics
are a single process's up to floating-point rounding -- except for BatchNorm, whose batch
statistics are computed per rank over the slice (``sync_bn=True`` on CUDA for global ones).
Running statistics are rank 0's. Rank 0 writes everything and runs the callbacks.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import pickle
import resource
import sys
import time

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..io.folders import RunDir, atomic_save, rank_and_world
from ..io.signals import Interrupted, polled, stop_requested
from ..io.signals import name as signal_name
from .data import Batches, Dataset, apply_augmentation, draw_augmentation
from .schedule import Schedule

METRIC_COLUMNS = ["step", "epoch", "split", "metric", "value"]
CHECKPOINT = "checkpoint.pt"
PRECISIONS = ("fp32", "bf16")


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Everything ``train`` needs besides the model, the data and the run folder.

    ``schedule`` defaults to ``Schedule.paper(steps)``; ``eval_every`` to a tenth of the run,
    ``checkpoint_every`` to ``eval_every``; ``log_every`` (plain progress lines) to a
    twentieth. ``augment=False`` turns off the dataset's augmentation. ``grad_checkpointing``
    recomputes each unit in the backward pass (less memory). ``evaluate=False``: no test evaluation at all (for a
    study of the first iterations in training mode). ``checkpoint_at_end=False`` skips the
    last checkpoint (a sweep cell, whose tables are kept elsewhere, would delete it at once).
    """
    steps: int
    batch_size: int = 128
    seed: int = 0
    device: str = "cpu"
    schedule: Schedule | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    eval_every: int | None = None
    checkpoint_every: int | None = None
    augment: bool = True
    grad_checkpointing: bool = False
    sync_bn: bool = False
    precision: str = "fp32"
    log_every: int | None = None
    eval_batch_size: int = 500
    evaluate: bool = True
    checkpoint_at_end: bool = True

    def resolved(self, n_train: int, world: int = 1) -> "TrainSettings":
        """Defaults filled in and every value checked (ValueError naming it)."""
        for name in ("steps", "batch_size", "eval_batch_size"):
            _positive(name, getattr(self, name))
        eval_every = self.eval_every or max(1, self.steps // 10)
        checkpoint_every = self.checkpoint_every or eval_every
        _positive("eval_every", eval_every)
        _positive("checkpoint_every", checkpoint_every)
        if self.batch_size > n_train:
            raise ValueError(f"batch size {self.batch_size} exceeds the {n_train} training images")
        if self.batch_size % world:
            raise ValueError(f"batch size {self.batch_size} is not divisible by the {world} processes")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        if self.sync_bn and world > 1 and torch.device(self.device).type != "cuda":
            raise ValueError("sync_bn needs CUDA (SyncBatchNorm does not run on CPU)")
        return dataclasses.replace(
            self, eval_every=eval_every, checkpoint_every=checkpoint_every,
            schedule=self.schedule or Schedule.paper(self.steps),
            log_every=self.log_every or max(1, self.steps // 20))


def _positive(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class CheckpointUnreadable(ValueError):
    """A checkpoint that cannot be read (cut off or corrupted on disk): named, with what to do."""

    def __init__(self, path, err):
        self.path = path
        first = " ".join(str(err).split("\n")[0].split())[:120]
        super().__init__(f"{path}: unreadable checkpoint ({type(err).__name__}: {first}); delete "
                         "it to train the net from the start")


@dataclasses.dataclass
class TrainResult:
    status: str                 # completed | diverged
    step: int                   # updates done
    metrics: pd.DataFrame       # DESIGN.md training rows
    tables: dict                # the callbacks' tables, e.g. {"probe": rows} (rank 0)
    model: nn.Module            # the trained model (unwrapped from DDP)
    peak_memory_bytes: int
    warmup_end: int | None = None   # updates made at the warm-up lr


# ---- distributed ----------------------------------------------------------------------------

def setup_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """Join the process group ``torchrun`` describes in the environment (WORLD_SIZE > 1):
    NCCL on CUDA (one GPU per local rank), gloo on CPU. Returns (rank, world size, device);
    a single process gets (0, 1, device) and no process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def _broadcast_buffers(model: nn.Module, world: int):
    if world > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)


# ---- precision, evaluation and memory -------------------------------------------------------

def autocast_for(device: torch.device, precision: str):
    """The forward's context: nothing for fp32 (with TF32 switched off on CUDA, so a CUDA
    fp32 run measures what a CPU one does), bf16 autocast for bf16."""
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return contextlib.nullcontext


def precision_record(device: torch.device, precision: str) -> dict:
    """What config.json says about the arithmetic of a run."""
    on_cuda = device.type == "cuda"
    return {"precision": precision, "autocast": "bf16" if precision == "bf16" else None,
            "tf32": bool(on_cuda and torch.backends.cuda.matmul.allow_tf32),
            "memory_format": "channels_last" if on_cuda else "contiguous (NCHW)"}


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500,
             autocast=contextlib.nullcontext, channels_last: bool = False) -> tuple[float, float]:
    """Mean cross-entropy and top-1 error of ``model`` (in eval mode) on (x, y); under
    torch.distributed each rank takes a contiguous shard and the sums are all-reduced."""
    rank, world = rank_and_world()
    lo, hi = len(x) * rank // world, len(x) * (rank + 1) // world
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=x.device)
    for start in range(lo, hi, batch_size):
        xb, yb = x[start:min(start + batch_size, hi)], y[start:min(start + batch_size, hi)]
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast():
            out = model(xb).float()
        totals += torch.stack([F.cross_entropy(out, yb, reduction="sum").double(),
                               (out.argmax(1) != yb).sum().double(),
                               torch.tensor(len(yb), dtype=torch.float64, device=x.device)])
    if world > 1:
        dist.all_reduce(totals)
    model.train(was_training)
    loss, wrong, count = totals.tolist()
    return loss / count, wrong / count


def peak_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what was measured): CUDA's max_memory_allocated, or on CPU the process's peak
    resident set size (ru_maxrss, KiB on Linux) -- everything the process ever held."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), "cuda_max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process_peak_rss"


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


# ---- the engine -----------------------------------------------------------------------------

def train(model: nn.Module, data: Dataset, run: RunDir | None = None,
          settings: TrainSettings | None = None, *, callbacks=(), quiet: bool = False,
          **fields) -> TrainResult:
    """Train ``model`` on ``data``; write rows, checkpoints and config to ``run`` (rank 0;
    ``None`` writes nothing). Continues from ``run``'s checkpoint if there is one.

    ``settings`` (or its fields as keywords: ``train(model, data, steps=60)``): see
    ``TrainSettings``. ``callbacks``: objects called at fixed points of the loop (see the
    module docstring), e.g. ``probes.ProbeCallback(every=k)``. ``quiet``: no progress output
    of the engine's own.
    """
    if settings is not None and fields:
        raise TypeError("give TrainSettings or its fields as keywords, not both")
    settings = settings or TrainSettings(**fields)
    trainer = _Trainer(model, data, run, settings, _Callbacks(callbacks), quiet)
    return trainer.run()


class _Callbacks:
    """A run's callbacks, each called with the hooks it has (see the module docstring)."""

    def __init__(self, callbacks):
        self.items = list(callbacks)
        self.keys = [getattr(cb, "name", type(cb).__name__) for cb in self.items]
        twice = sorted({k for k in self.keys if self.keys.count(k) > 1})
        if twice:
            raise ValueError(f"two callbacks named {twice[0]!r}: give each its own name (attribute 'name')")

    def call(self, hook, *args):
        for cb in self.items:
            method = getattr(cb, hook, None)
            if method is not None:
                method(*args)

    def state_dict(self) -> dict:
        return {k: cb.state_dict() for k, cb in zip(self.keys, self.items) if hasattr(cb, "state_dict")}

    def load_state_dict(self, states: dict):
        for k, cb in zip(self.keys, self.items):
            if k in states and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(states[k])

    def tables(self) -> dict:
        tables = {}
        for cb in self.items:
            tables.update(cb.tables() if hasattr(cb, "tables") else {})
        return tables


class _Trainer:
    """One training run's state; ``run()`` is the loop, each method one chore of it."""

    def __init__(self, model, data, run, settings, callbacks, quiet):
        self.device = torch.device(settings.device)
        self.rank, self.world = rank_and_world()
        self.callbacks = callbacks if self.rank == 0 else _Callbacks(())
        self.s = settings.resolved(len(data.train_x), self.world)
        if self.s.grad_checkpointing and not hasattr(model, "grad_checkpointing"):
            raise ValueError(f"{type(model).__name__} does not support gradient checkpointing "
                             "(a resnet_lab ResNet does)")
        self.run_dir = run
        self.on_cuda = self.device.type == "cuda"
        self.autocast = autocast_for(self.device, self.s.precision)
        self.model = self._place(model)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.s.schedule.warmup_lr,
                                         momentum=self.s.momentum, weight_decay=self.s.weight_decay)
        self.generator = torch.Generator(device=self.device).manual_seed(self.s.seed)
        self.step, self.rows, self.warmup_end = 0, [], None
        self.status = "running"
        self.data = data.to(self.device)
        self._restore()
        self.batches = Batches(len(data.train_x), self.s.batch_size, self.s.seed)
        self.net = self.model if self.world == 1 else nn.parallel.DistributedDataParallel(
            self.model, device_ids=[self.device] if self.on_cuda else None)
        self.progress = _Progress(self.s.steps, self.step, self.s.log_every,
                                  enabled=self.rank == 0 and not quiet)
        self.pending = []          # steps whose loss is still on the device

    def _place(self, model):
        if self.s.grad_checkpointing:
            model.grad_checkpointing = True
        if self.s.sync_bn and self.world > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.to(self.device)
        if self.on_cuda:
            model.to(memory_format=torch.channels_last)
        return model

    def _restore(self):
        path = self.run_dir.path / CHECKPOINT if self.run_dir is not None else None
        if path is not None and path.exists():
            try:
                state = torch.load(path, map_location="cpu")
            except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
                raise CheckpointUnreadable(path, err) from None
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.generator.set_state(state["rng"]["augment"])
            torch.set_rng_state(state["rng"]["torch"])
            if self.on_cuda and state["rng"]["cuda"] is not None:
                torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
            self.step, self.rows = state["step"], [tuple(r) for r in state["rows"]]
            self.warmup_end = state.get("warmup_end")
            self.callbacks.load_state_dict(state.get("callbacks") or {})
        if self.world > 1:
            dist.barrier()        # every rank has read the checkpoint before rank 0 writes one
        if self.on_cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        self._record_config()

    def _record_config(self):
        if self.run_dir is None:
            return
        s = self.s
        self.run_dir.update_config(
            device=describe_device(self.device), world_size=self.world,
            resumed_from_step=self.step or None,
            training=dict(steps=s.steps, batch_size=s.batch_size, seed=s.seed,
                          schedule=s.schedule.as_dict(), momentum=s.momentum,
                          weight_decay=s.weight_decay, eval_every=s.eval_every,
                          checkpoint_every=s.checkpoint_every, augment=self._augments(),
                          pad=self.data.pad, flip=self.data.flip,
                          grad_checkpointing=s.grad_checkpointing, sync_bn=s.sync_bn,
                          **precision_record(self.device, s.precision),
                          parameters=sum(p.numel() for p in self.model.parameters())))

    def _augments(self) -> bool:
        return self.s.augment and (self.data.pad > 0 or self.data.flip)

    # ---- one update ----------------------------------------------------------------------
    def one_step(self):
        """Update ``self.step`` (0-based) on its batch; its loss stays on the device."""
        s, step = self.s, self.step
        lr = s.schedule.lr_at(step, self.warmup_end)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        x, y = self._batch(step)
        self.callbacks.call("on_step_start", step + 1)
        with self.autocast():
            out = self.net(x).float()
        loss = F.cross_entropy(out, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.callbacks.call("on_after_backward", step + 1)
        self.optimizer.step()
        self.callbacks.call("on_step_end", step + 1)
        stats = torch.stack([loss.detach(), (out.argmax(1) != y).float().mean()])
        if self.world > 1:
            dist.all_reduce(stats)
            stats /= self.world
        self.pending.append((step + 1, self.batches.epoch(step), lr, time.perf_counter() - t0, stats))
        self.step += 1

    def _batch(self, step):
        local = self.s.batch_size // self.world
        part = slice(self.rank * local, (self.rank + 1) * local)
        idx = self.batches.indices(step).to(self.device)[part]
        x, y = self.data.train_x[idx], self.data.train_y[idx]
        if self._augments():
            offsets, flips = draw_augmentation(self.s.batch_size, self.generator, self.data.pad,
                                               self.data.flip)
            x = apply_augmentation(x, offsets[part], None if flips is None else flips[part],
                                   self.data.pad)
        if self.on_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def flush(self) -> bool:
        """Move pending losses to the host and append their rows; end the warm-up where its
        rule says so. Returns False (and drops later steps) if a loss was not finite."""
        if not self.pending:
            return True
        values = torch.stack([p[-1] for p in self.pending]).cpu().tolist()
        for (step, epoch, lr, seconds, _), (loss, error) in zip(self.pending, values):
            self.rows.extend([(step, epoch, "train", "loss", loss), (step, epoch, "train", "error", error),
                              (step, epoch, "train", "lr", lr), (step, epoch, "train", "seconds", seconds)])
            self.progress.train(step, loss, error, lr, seconds)
            if self._warming() and self.s.schedule.warmup_ends(step - 1, error):
                self.warmup_end = step
            if not math.isfinite(loss):
                self.pending.clear()
                self.step = step
                return False
        self.pending.clear()
        return True

    def _sync_every(self) -> int:
        """Host transfers of the loss: every step on the CPU and while the warm-up waits for
        the error to fall (its end decides the next lr); on a GPU otherwise in batches."""
        waits = self._warming() and self.s.schedule.warmup_error is not None
        return 1 if self.device.type == "cpu" or waits else 50

    def _warming(self) -> bool:
        return self.warmup_end is None and self.s.schedule.warmup_max_steps > 0

    # ---- evaluation, checkpoints, tables -------------------------------------------------
    def evaluate_now(self) -> bool:
        """Test loss and error after ``self.step`` updates; False if the loss is not finite."""
        _broadcast_buffers(self.model, self.world)
        loss, error = evaluate(self.model, self.data.test_x, self.data.test_y,
                               self.s.eval_batch_size, self.autocast, self.on_cuda)
        epoch = self.batches.epoch(self.step - 1)
        self.rows.extend([(self.step, epoch, "test", "loss", loss),
                          (self.step, epoch, "test", "error", error)])
        self.progress.note(f"step {self.step}/{self.s.steps}  test loss {loss:.4f}  error {error:.4f}")
        return math.isfinite(loss)

    def checkpoint(self):
        _broadcast_buffers(self.model, self.world)
        if self.run_dir is not None and self.run_dir.writer:
            atomic_save({"step": self.step, "model": self.model.state_dict(),
                         "optimizer": self.optimizer.state_dict(), "warmup_end": self.warmup_end,
                         "rng": {"torch": torch.get_rng_state(), "augment": self.generator.get_state(),
                                 "cuda": torch.cuda.get_rng_state() if self.on_cuda else None},
                         "rows": self.rows, "callbacks": self.callbacks.state_dict()},
                        self.run_dir.path / CHECKPOINT)

    def save_tables(self):
        if self.run_dir is None:
            return
        self.run_dir.write_csv("metrics.csv.gz", pd.DataFrame(self.rows, columns=METRIC_COLUMNS))
        for name, table in self.callbacks.tables().items():
            self.run_dir.write_csv(f"{name}.csv.gz", table)
        memory, kind = _peak_memory_all_ranks(self.device, self.world)
        self.run_dir.update_config(peak_memory_bytes=memory, peak_memory_kind=kind,
                                   steps_done=self.step, warmup_end_step=self.warmup_end)

    # ---- the loop ------------------------------------------------------------------------
    def _next_stop(self):
        """Where the current stretch of steps ends: the next evaluation, checkpoint or the end."""
        s, step = self.s, self.step
        stops = [s.steps, _next_multiple(step, s.checkpoint_every)]
        if s.evaluate:
            stops.append(_next_multiple(step, s.eval_every))
        return min(stops)

    def _train_to_next_stop(self):
        """Train up to the next stop; False if the run diverged."""
        stop = self._next_stop()
        while self.step < stop and not self._stop_asked():
            self.one_step()
            if len(self.pending) >= self._sync_every() and not self.flush():
                return False
        return self.flush()

    def _stop_asked(self) -> bool:
        """A signal asked this run to stop (``resnet_lab.io.signals``; one process only)."""
        return self.world == 1 and stop_requested() is not None

    def _stop(self):
        """Checkpoint at this step (unless the periodic one just did), then stop: the same
        call resumes here, bitwise as if never stopped."""
        if self.step % self.s.checkpoint_every:
            self.checkpoint()
        signum = stop_requested()
        raise Interrupted(signum, f"interrupted by {signal_name(signum)} at step {self.step} "
                                  "(checkpointed)", step=self.step)

    def run(self) -> TrainResult:
        # One process: a signal stops the loop after a step, which it checkpoints; the ranks of
        # a torchrun would not agree on the step, so there a signal stops it at once.
        with polled() if self.world == 1 else contextlib.nullcontext():
            return self._run()

    def _run(self) -> TrainResult:
        try:
            self.callbacks.call("on_train_start", self.model, self.step)
            self.model.train()
            while self.step < self.s.steps and self.status == "running":
                finite = self._train_to_next_stop()
                if finite and self.s.evaluate and (self.step % self.s.eval_every == 0
                                                   or self.step == self.s.steps):
                    finite = self.evaluate_now()
                if not finite:
                    self.status = "diverged"
                    self.progress.note(f"step {self.step}: loss is not finite; stopping (diverged)")
                    break
                if self.step % self.s.checkpoint_every == 0 or self.step == self.s.steps:
                    if self.step < self.s.steps or self.s.checkpoint_at_end:
                        self.checkpoint()
                    self.save_tables()
                if self._stop_asked() and self.step < self.s.steps:
                    self._stop()
            if self.status == "diverged":
                self.save_tables()
            self.status = "completed" if self.status == "running" else self.status
            if self.run_dir is not None:
                extra = {"diverged_at_step": self.step} if self.status == "diverged" else {}
                self.run_dir.finish(self.status, **extra)
        except BaseException as err:
            if self.run_dir is not None:
                self.run_dir.finish("interrupted" if isinstance(err, KeyboardInterrupt) else "failed",
                                    steps_done=self.step, error=f"{type(err).__name__}: {err}")
            raise
        finally:
            self.callbacks.call("on_train_end")
            self.progress.close()
        memory, _ = peak_memory(self.device)
        return TrainResult(self.status, self.step, pd.DataFrame(self.rows, columns=METRIC_COLUMNS),
                           self.callbacks.tables(), self.model, memory, self.warmup_end)


class _Progress:
    """A tqdm bar on an interactive terminal, plain lines every ``log_every`` steps otherwise,
    nothing when quiet or not rank 0."""

    def __init__(self, steps, start, log_every, enabled):
        self.steps, self.log_every, self.enabled = steps, log_every, enabled
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=steps, initial=start, unit="step", dynamic_ncols=True)

    def train(self, step, loss, error, lr, seconds):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", err=f"{error:.3f}", lr=f"{lr:g}")
        elif self.enabled and (step % self.log_every == 0 or step == self.steps):
            print(f"step {step}/{self.steps}  train loss {loss:.4f}  error {error:.4f}  "
                  f"lr {lr:g}  {seconds:.3f} s/step", file=sys.stderr, flush=True)

    def note(self, text):
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        elif self.enabled:
            print(text, file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _next_multiple(step, every):
    return (step // every + 1) * every


def _peak_memory_all_ranks(device, world):
    memory, kind = peak_memory(device)
    if world > 1:
        box = torch.tensor([memory], dtype=torch.float64, device=device)
        dist.all_reduce(box, op=dist.ReduceOp.MAX)
        memory = int(box.item())
    return memory, kind
