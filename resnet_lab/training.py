"""The training engine: the paper's recipe, resumable, on one CPU or many GPUs.

Recipe (He et al. 2016, CIFAR): SGD, momentum 0.9, weight decay 1e-4 on every parameter, batch 128,
lr 0.1 with a warm-up at 0.01 for the first 400 iterations and /10 at 32k and 48k of 64k
iterations. A run of ``steps`` iterations keeps the *shape* of that schedule: warm-up and
milestones are the same fractions of the run as in the paper (``Schedule.paper``), so a
1,000-step quick run warms up for round(400/64) = 6 steps and decays at steps 500 and 750.

Rows (DESIGN.md schema ``step, epoch, split, metric, value``): every step a train ``loss``,
``error``, ``lr`` and ``seconds``; every ``eval_every`` steps a test ``loss`` and ``error``.
``step`` counts updates: train rows of step s describe the s-th update (its batch, its lr),
test rows of step s the weights after s updates; probe rows use the train rows' numbering.

Checkpoints (``checkpoint.pt`` in the run folder, written atomically every ``checkpoint_every``
steps) hold the weights, optimizer, step, the RNG states (torch, CUDA, augmentation generator)
and all rows so far. Batches are a pure function of (seed, step), so ``train`` started again on the
same run folder continues from the last checkpoint and ends, on CPU, with bitwise the same
weights and rows (except ``seconds``) as an uninterrupted run.

A non-finite training loss is recorded, then the run stops with status ``diverged``.

Distributed: under ``torchrun`` (``setup_distributed``) the model is wrapped in
DistributedDataParallel and each rank trains on its contiguous slice of the same global batch
(augmentation drawn for the whole batch, then sliced), so the update and the reported metrics
are a single process's up to floating-point rounding -- except for BatchNorm, whose batch
statistics are computed per rank over the slice (pass ``sync_bn=True`` on CUDA for global
statistics; SyncBatchNorm does not run on CPU). Running statistics are rank 0's (DDP broadcasts
them every forward; the engine does too before evaluating and at the end). Rank 0 writes
everything; a probe, if any, runs on rank 0 and sees its slice.

On CUDA the forward runs under bf16 autocast with channels-last tensors; on CPU in fp32.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import resource
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .data import Batches, Dataset, apply_augmentation, draw_augmentation
from .runs import RunDir, atomic_save, check_writable_dir, rank_and_world

PAPER_ITERATIONS = 64_000
PAPER_WARMUP = 400
PAPER_MILESTONES = (32_000, 48_000)
METRIC_COLUMNS = ["step", "epoch", "split", "metric", "value"]
CHECKPOINT = "checkpoint.pt"


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Learning rate per update: ``warmup_lr`` for the first ``warmup_steps`` updates, then
    ``lr`` divided by ``divide_by`` at each milestone passed (a division, so that 0.1 / 10
    is exactly 0.01 in the CSVs)."""
    steps: int
    lr: float = 0.1
    warmup_lr: float = 0.01
    warmup_steps: int = 0
    milestones: tuple = ()
    divide_by: float = 10.0

    @classmethod
    def paper(cls, steps: int, lr: float = 0.1, warmup_lr: float = 0.01, warmup: bool = True):
        """The paper's schedule compressed (or stretched) to ``steps`` updates: warm-up
        400/64k of the run, milestones at 32k/64k and 48k/64k of it, rounded to whole steps."""
        scale = steps / PAPER_ITERATIONS
        return cls(steps, lr, warmup_lr, round(PAPER_WARMUP * scale) if warmup else 0,
                   tuple(round(m * scale) for m in PAPER_MILESTONES))

    def lr_at(self, step: int) -> float:
        """The learning rate of update ``step`` (0-based)."""
        if step < self.warmup_steps:
            return self.warmup_lr
        return self.lr / self.divide_by ** sum(step >= m for m in self.milestones)


@dataclasses.dataclass
class TrainResult:
    status: str                 # completed | diverged
    step: int                   # updates done
    metrics: pd.DataFrame       # DESIGN.md training rows
    probe: pd.DataFrame | None  # the probe's rows, if a probe ran (rank 0)
    model: nn.Module            # the trained model (unwrapped from DDP)
    peak_memory_bytes: int


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


# ---- evaluation and memory ------------------------------------------------------------------

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


# ---- progress -------------------------------------------------------------------------------

class _Progress:
    """A tqdm bar on an interactive terminal, plain lines every ``log_every`` steps otherwise,
    nothing when quiet or not rank 0."""

    def __init__(self, steps, start, log_every, enabled):
        self.steps, self.log_every, self.enabled = steps, log_every, enabled
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=steps, initial=start, unit="step", dynamic_ncols=True)

    def train(self, step, loss, error, lr, seconds, n_new):
        if self.bar is not None:
            self.bar.update(n_new)
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


# ---- the engine -----------------------------------------------------------------------------

def train(model: nn.Module, data: Dataset, run: RunDir | None = None, *, steps: int,
          batch_size: int = 128, seed: int = 0, device="cpu", schedule: Schedule | None = None,
          momentum: float = 0.9, weight_decay: float = 1e-4, eval_every: int | None = None,
          checkpoint_every: int | None = None, augment: bool = True, grad_checkpoint: bool = False,
          sync_bn: bool = False, probe_factory=None, probe_every: int = 1, quiet: bool = False,
          log_every: int | None = None, eval_batch_size: int = 500) -> TrainResult:
    """Train ``model`` on ``data`` for ``steps`` updates; write rows, checkpoints and config to
    ``run`` (rank 0; ``None`` writes nothing). Continues from ``run``'s checkpoint if there is one.

    ``schedule`` defaults to ``Schedule.paper(steps)``. ``eval_every`` defaults to a tenth of
    the run, ``checkpoint_every`` to ``eval_every``. ``augment=False`` turns off the dataset's
    augmentation (``data.pad``, ``data.flip``). ``grad_checkpoint`` sets
    ``model.checkpoint_units``. ``probe_factory(model, every=probe_every)`` builds a probe
    (DESIGN.md Probe API, e.g. ``probes.SignalProbe``) used as ``with probe:`` around training
    and stepped after every backward; its rows go to ``probe.csv.gz``. It probes the steps
    whose 0-based index is a multiple of ``probe_every`` (rows numbered as train rows: 1,
    1 + k, ...); a resumed run starts using its fresh probe at the first such step, so it probes
    the same steps as an uninterrupted one. ``log_every``: plain progress line period (default a
    twentieth of the run).
    """
    device = torch.device(device)
    rank, world = rank_and_world()
    eval_every, checkpoint_every = check_train_args(
        n_train=len(data.train_x), steps=steps, batch_size=batch_size, world=world,
        eval_every=eval_every, checkpoint_every=checkpoint_every,
        probe_every=probe_every, sync_bn=sync_bn, device=device)
    log_every = log_every or max(1, steps // 20)
    if grad_checkpoint and not hasattr(model, "checkpoint_units"):
        raise ValueError(f"{type(model).__name__} does not support gradient checkpointing "
                         "(a resnet_lab ResNet does)")
    schedule = schedule or Schedule.paper(steps)
    local = batch_size // world
    on_cuda = device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if on_cuda else contextlib.nullcontext

    if grad_checkpoint:
        model.checkpoint_units = True
    if sync_bn and world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if on_cuda:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=schedule.lr_at(0), momentum=momentum,
                                weight_decay=weight_decay)
    generator = torch.Generator(device=device).manual_seed(seed)
    start, rows, probe_rows = 0, [], None
    checkpoint_path = run.path / CHECKPOINT if run is not None else None
    if checkpoint_path is not None and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location="cpu")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["rng"]["augment"])
        torch.set_rng_state(state["rng"]["torch"])
        if on_cuda and state["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        start, rows = state["step"], [tuple(r) for r in state["rows"]]
        probe_rows = pd.DataFrame(state["probe_rows"]) if state["probe_rows"] is not None else None
    if world > 1:
        dist.barrier()          # every rank has read the checkpoint before rank 0 writes a new one
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)

    data = data.to(device)
    batches = Batches(len(data.train_x), batch_size, seed)
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device] if on_cuda else None)
    probe = probe_factory(model, every=probe_every) if probe_factory is not None and rank == 0 else None
    probe_start = -(-start // probe_every) * probe_every   # its first step: the probe counts from 0
    do_augment = augment and (data.pad > 0 or data.flip)
    if run is not None:
        run.update_config(device=_describe(device), world_size=world, resumed_from_step=start or None,
                          training=dict(steps=steps, batch_size=batch_size, seed=seed,
                                        schedule=dataclasses.asdict(schedule), momentum=momentum,
                                        weight_decay=weight_decay, eval_every=eval_every,
                                        checkpoint_every=checkpoint_every, augment=do_augment,
                                        pad=data.pad, flip=data.flip, grad_checkpoint=grad_checkpoint,
                                        sync_bn=sync_bn, bf16_autocast=on_cuda, channels_last=on_cuda,
                                        probe_every=probe_every if probe_factory else None,
                                        parameters=sum(p.numel() for p in model.parameters())))

    def one_step(step):
        lr = schedule.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        idx = batches.indices(step).to(device)[rank * local:(rank + 1) * local]
        x, y = data.train_x[idx], data.train_y[idx]
        if do_augment:
            offsets, flips = draw_augmentation(batch_size, generator, data.pad, data.flip)
            part = slice(rank * local, (rank + 1) * local)
            x = apply_augmentation(x, offsets[part], None if flips is None else flips[part], data.pad)
        if on_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            out = net(x).float()
        loss = F.cross_entropy(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if probe is not None and step >= probe_start:
            probe.step()
        optimizer.step()
        stats = torch.stack([loss.detach(), (out.argmax(1) != y).float().mean()])
        if world > 1:
            dist.all_reduce(stats)
            stats /= world
        return step + 1, batches.epoch(step), lr, time.perf_counter() - t0, stats

    progress = _Progress(steps, start, log_every, enabled=rank == 0 and not quiet)
    sync_every = 1 if device.type == "cpu" else 50     # host transfers of the loss, on GPU batched
    pending, status, step = [], "running", start

    def flush():
        """Move pending losses to the host, append rows; True if a loss was not finite."""
        if not pending:
            return False
        values = torch.stack([p[-1] for p in pending]).cpu().tolist()
        for (s, epoch, lr, seconds, _), (loss, error) in zip(pending, values):
            rows.extend([(s, epoch, "train", "loss", loss), (s, epoch, "train", "error", error),
                         (s, epoch, "train", "lr", lr), (s, epoch, "train", "seconds", seconds)])
            progress.train(s, loss, error, lr, seconds, 1)
            if not math.isfinite(loss):     # keep the rows up to this step, drop the later ones
                pending.clear()
                return True
        pending.clear()
        return False

    def all_probe_rows():
        if probe is None:
            return probe_rows
        new = probe.collect()
        new["step"] = new["step"] + probe_start + 1
        return new if probe_rows is None else pd.concat([probe_rows, new], ignore_index=True)

    def save_tables(table):
        if run is None:
            return
        run.write_csv("metrics.csv.gz", pd.DataFrame(rows, columns=METRIC_COLUMNS))
        if table is not None:
            run.write_csv("probe.csv.gz", table)
        memory, kind = _peak_memory_all_ranks(device, world)
        run.update_config(peak_memory_bytes=memory, peak_memory_kind=kind, steps_done=step)

    try:
        model.train()
        while step < steps and status == "running":
            stop = min(steps, _next_multiple(step, eval_every), _next_multiple(step, checkpoint_every),
                       probe_start if step < probe_start else steps)
            probing = probe is not None and step >= probe_start
            with probe if probing else contextlib.nullcontext():
                while step < stop:
                    pending.append(one_step(step))
                    step += 1
                    if len(pending) >= sync_every and flush():
                        status = "diverged"
                        break
            if status == "running" and flush():
                status = "diverged"
            if status == "diverged":
                step = rows[-1][0]
                progress.note(f"step {step}: loss is not finite; stopping (diverged)")
                break
            if step % eval_every == 0 or step == steps:
                _broadcast_buffers(model, world)
                loss, error = evaluate(model, data.test_x, data.test_y, eval_batch_size, autocast, on_cuda)
                epoch = batches.epoch(step - 1)
                rows.extend([(step, epoch, "test", "loss", loss), (step, epoch, "test", "error", error)])
                progress.note(f"step {step}/{steps}  test loss {loss:.4f}  error {error:.4f}")
            if step % checkpoint_every == 0 or step == steps:
                _broadcast_buffers(model, world)
                table = all_probe_rows()
                if run is not None and run.writer:
                    atomic_save(_checkpoint(step, model, optimizer, generator, on_cuda, rows, table),
                                checkpoint_path)
                save_tables(table)
        if status == "diverged":
            save_tables(all_probe_rows())
        status = "completed" if status == "running" else status
        if run is not None:
            run.finish(status, **({"diverged_at_step": step} if status == "diverged" else {}))
    except BaseException as err:
        if run is not None:
            run.finish("interrupted" if isinstance(err, KeyboardInterrupt) else "failed",
                       steps_done=step, error=f"{type(err).__name__}: {err}")
        raise
    finally:
        progress.close()
    memory, _ = peak_memory(device)
    return TrainResult(status, step, pd.DataFrame(rows, columns=METRIC_COLUMNS), all_probe_rows(),
                       model, memory)


def check_train_args(*, n_train: int, steps: int, batch_size: int, world: int = 1,
                     eval_every: int | None = None, checkpoint_every: int | None = None,
                     probe_every: int | None = None, sync_bn: bool = False, device="cpu"):
    """Check ``train``'s settings (scripts call it before creating a run folder); returns
    (eval_every, checkpoint_every) with their defaults: a tenth of the run, and eval_every."""
    eval_every = eval_every or max(1, steps // 10)
    checkpoint_every = checkpoint_every or eval_every
    for name, value in (("steps", steps), ("batch_size", batch_size), ("eval_every", eval_every),
                        ("checkpoint_every", checkpoint_every), ("probe_every", probe_every or 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if batch_size > n_train:
        raise ValueError(f"batch size {batch_size} exceeds the {n_train} training images")
    if batch_size % world:
        raise ValueError(f"batch size {batch_size} is not divisible by the {world} processes")
    if sync_bn and world > 1 and torch.device(device).type != "cuda":
        raise ValueError("sync_bn needs CUDA (SyncBatchNorm does not run on CPU)")
    return eval_every, checkpoint_every


def _next_multiple(step, every):
    return (step // every + 1) * every


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def _peak_memory_all_ranks(device, world):
    memory, kind = peak_memory(device)
    if world > 1:
        box = torch.tensor([memory], dtype=torch.float64, device=device)
        dist.all_reduce(box, op=dist.ReduceOp.MAX)
        memory = int(box.item())
    return memory, kind


def _checkpoint(step, model, optimizer, generator, on_cuda, rows, probe_rows):
    return {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "augment": generator.get_state(),
                    "cuda": torch.cuda.get_rng_state() if on_cuda else None},
            "rows": rows, "probe_rows": None if probe_rows is None else probe_rows.to_dict("list")}


# ---- sweeps ---------------------------------------------------------------------------------

def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n; None -> (0, 1), the whole sweep."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return i, n


def select_shard(configs, shard) -> list:
    """Every n-th run config starting at the i-th: the share of machine i of n.
    ``shard`` is "i/n", (i, n) or None (everything)."""
    i, n = parse_shard(shard) if shard is None or isinstance(shard, str) else shard
    return list(configs)[i::n]


def merge_runs(run_dirs, out) -> list[Path]:
    """Merge run folders (e.g. copied back from the machines of a sharded sweep) into ``out``:
    each CSV name found in them concatenated with a leading ``run_id`` column, and ``runs.csv``
    with every run's id, status and arguments. Returns the files written."""
    out = check_writable_dir(out)
    run_dirs = [RunDir(p) for p in run_dirs]
    tables, runs = {}, []
    for run in run_dirs:
        config = run.config
        runs.append({"run_id": config.get("run_id", run.path.name), "status": config.get("status"),
                     "path": str(run.path), **config.get("args", {})})
        for csv in sorted(run.path.glob("*.csv*")):
            df = pd.read_csv(csv)
            df.insert(0, "run_id", runs[-1]["run_id"])
            tables.setdefault(csv.name, []).append(df)
    out.mkdir(parents=True, exist_ok=True)
    merged = RunDir(out)
    merged.write_csv("runs.csv", pd.DataFrame(runs))
    for name, frames in tables.items():
        merged.write_csv(name, pd.concat(frames, ignore_index=True))
    return [out / "runs.csv"] + [out / name for name in tables]
