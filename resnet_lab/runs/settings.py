"""The one home for settings: flags -> preset -> overrides -> checks -> derived values.

Every script declares its presets (``quick``, ``paper``, ``smoke``) and which of the
``OPTIONS`` it takes; ``parser`` builds its command line and ``resolve`` turns the parsed
arguments into one checked settings dict, *before anything is written*: a bad value is a
``ValueError`` naming the flag, the value and what is valid (a script turns it into one line
on stderr and exit status 2, ``resnet_lab.runs.cli``).

Preset values use the flags' names (``depths``, ``seeds``, ``width``, ``steps`` ...); a preset
may give ``widths`` per unit block instead of one ``width`` (``{"basic": 16, "bottleneck":
4}``): a depth trend holds width and block fixed, so the width belongs to the series.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
from pathlib import Path

import torch

from ..engine.data import DATASETS
from ..engine.schedule import Schedule, check_steps
from ..engine.training import PRECISIONS
from ..io.folders import PAPER_ROOT, check_writable_dir
from ..networks.families import resolve_cifar_block
from ..networks.units import UNIT_KINDS, VERSIONS, resolve_unit_kind
from .cli import Parser, resolve_device
from .shards import resolve_shard

MAX_SEED = 2**63 - 1          # torch.manual_seed's range
MAX_THREADS = 1024
MAX_WIDTH = 4096


def positive_int(flag, value, limit=None):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or \
            (limit is not None and value > limit):
        valid = f"an integer from 1 to {limit}" if limit else "a positive integer"
        raise ValueError(f"{flag} {value!r}: must be {valid}")
    return value


def check_depths(depths, s=None):
    depths = list(depths)
    if not depths:
        raise ValueError("--depths: give at least one depth")
    for depth in depths:
        try:
            resolve_cifar_block(depth)
        except ValueError as err:
            raise ValueError(f"--depths: {err}") from None
    if len(set(depths)) != len(depths):
        raise ValueError(f"--depths {' '.join(map(str, depths))}: each depth once")
    return sorted(depths)


def check_seeds(seeds, s=None):
    seeds = list(seeds)
    bad = [x for x in seeds if not 0 <= x <= MAX_SEED]
    if bad:
        raise ValueError(f"--seeds {bad[0]}: a seed is an integer from 0 to {MAX_SEED}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {' '.join(map(str, seeds))}: each seed once (a repeated seed "
                         "would train the same net twice and count it twice)")
    minimum = (s or {}).get("min_seeds", 1)
    if len(seeds) < minimum:
        raise ValueError(f"--seeds {' '.join(map(str, seeds))}: need at least {minimum} seeds "
                         "for this experiment's tests")
    return seeds


def check_lr(lr, s=None):
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"--lr {lr!r}: must be a positive finite number")
    return float(lr)


def check_warmup_steps(warmup_steps, s):
    """Any length >= 0: a warm-up longer than the run keeps every step at lr 0.01 (grad_flow
    studies those first steps); experiments that test at the main lr also call
    ``check_main_lr_phase``."""
    if not isinstance(warmup_steps, int) or isinstance(warmup_steps, bool) or warmup_steps < 0:
        raise ValueError(f"--warmup-steps {warmup_steps!r}: must be an integer >= 0")
    return warmup_steps


def check_main_lr_phase(s) -> None:
    """The run must reach its main lr: its tests read windows after the warm-up."""
    if s["warmup_steps"] >= s["steps"]:
        raise ValueError(f"--warmup-steps {s['warmup_steps']}: must be below --steps "
                         f"({s['steps']}); this experiment's tests read the iterations at --lr")


def check_batch_size(batch_size, s=None):
    positive_int("--batch-size", batch_size)
    if batch_size < 2:
        raise ValueError(f"--batch-size {batch_size}: must be at least 2 (BatchNorm in train mode "
                         "needs two samples)")
    return batch_size


def check_versions(versions, s=None):
    if versions is None:
        return None
    out = []
    for v in versions:
        if str(v).lower().lstrip("v") not in ("1", "2"):
            raise ValueError(f"--versions {v}: valid versions are 1 (post-activation) and 2 "
                             "(pre-activation)")
        out.append(int(str(v).lower().lstrip("v")))
    if len(set(out)) != len(out):
        raise ValueError(f"--versions {' '.join(map(str, versions))}: each version once")
    return out


def check_unit_kinds(kinds, s=None):
    if kinds is None:
        return None
    for k in kinds:
        if k not in UNIT_KINDS:
            raise ValueError(f"--unit-kinds {k}: valid unit kinds are {', '.join(UNIT_KINDS)}")
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"--unit-kinds {' '.join(kinds)}: each unit kind once")
    return list(kinds)


def check_list_choices(flag, choices):
    def check(values, s=None):
        values = list(values)
        for v in values:
            if v not in choices:
                raise ValueError(f"{flag} {v}: valid values are {', '.join(choices)}")
        if len(set(values)) != len(values):
            raise ValueError(f"{flag} {' '.join(values)}: each value once")
        return values
    return check


@dataclasses.dataclass(frozen=True)
class Option:
    """One setting: its flag, argparse's description of it, and its check.

    A script's options are names of ``OPTIONS`` or ``Option`` s of their own (an instrument's
    settings live with it, e.g. ``analysis.probing.PROBE_STEPS``)."""
    flag: str
    kwargs: dict
    check: object = None

    @property
    def name(self) -> str:
        """The settings key: the flag without dashes, ``--probe-steps`` -> ``probe_steps``."""
        return self.flag.lstrip("-").replace("-", "_")


def _named(entry) -> tuple:
    """(name, Option) of an entry of a script's options: a name of ``OPTIONS`` or an Option."""
    return (entry.name, entry) if isinstance(entry, Option) else (entry, OPTIONS[entry])


OPTIONS = {
    "depths": Option("--depths", dict(type=int, nargs="+", metavar="DEPTH",
                                      help="CIFAR depths: 6n+2 (basic units) or 9n+2 (bottleneck)"),
                     check_depths),
    "seeds": Option("--seeds", dict(type=int, nargs="+", metavar="SEED",
                                    help="seeds, one net per seed and version"), check_seeds),
    "width": Option("--width", dict(type=int, help="base width of every net (default: the preset's, "
                                                   "one per unit block)"),
                    lambda v, s=None: positive_int("--width", v, MAX_WIDTH)),
    "steps": Option("--steps", dict(type=int, help="training iterations per net"),
                    lambda v, s=None: check_steps(v)),
    "batch_size": Option("--batch-size", dict(type=int, help="batch size"), check_batch_size),
    "warmup_steps": Option("--warmup-steps", dict(type=int, help="iterations at lr 0.01 before --lr"),
                           check_warmup_steps),
    "lr": Option("--lr", dict(type=float, help="learning rate after the warm-up at 0.01"), check_lr),
    "dataset": Option("--dataset", dict(choices=DATASETS,
                                        help="digits (bundled 8x8), gaussian (N(0,1) inputs, random "
                                             "labels), cifar10/cifar100 (archive in --data-dir)")),
    "versions": Option("--versions", dict(nargs="+", metavar="V",
                                          help="1 (post-activation) and/or 2 (pre-activation)"),
                       check_versions),
    "unit_kinds": Option("--unit-kinds", dict(nargs="+", metavar="KIND",
                                              help=f"unit kinds: {', '.join(UNIT_KINDS)}"),
                         check_unit_kinds),
    "inputs": Option("--inputs", dict(nargs="+", metavar="INPUT",
                                      help="gaussian (N(0, 1) images) and/or real (--dataset's "
                                           "images)"), check_list_choices("--inputs", ("gaussian", "real"))),
}


def parser(description: str, presets: dict, options, *, prog=None, publish: bool = True,
           sweep: bool = True) -> Parser:
    """The command line of a script: ``--preset``, its ``options`` (each defaulting to the
    preset's value) and the common flags (with ``sweep``: those of a sweep of nets)."""
    p = Parser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = "quick" if "quick" in presets else next(iter(presets))
    p.add_argument("--preset", choices=list(presets), default=default,
                   help=f"settings bundle: {', '.join(presets)} (default {default})")
    for name, option in map(_named, options):
        p.add_argument(option.flag, dest=name, default=None,
                       **{**option.kwargs, "help": option.kwargs["help"] + " (default: the preset's)"})
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto = cuda when available, else cpu (default auto)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32 (TF32 off; what a probe measures) or bf16 autocast (faster on a GPU); "
                        "default fp32")
    p.add_argument("--data-dir", default="data",
                   help="folder holding cifar-10-python.tar.gz / cifar-100-python.tar.gz (default data)")
    p.add_argument("--out", help="root folder of the run folders (default results/runs)")
    p.add_argument("--threads", type=int, help="PyTorch threads per process (default 1 on the CPU: "
                                               "the numbers do not depend on --workers)")
    p.add_argument("--workers", type=int, help="processes running cells side by side (default: the "
                                               "CPU's cores on the CPU, one per --devices GPU)")
    if publish:
        p.add_argument("--publish", metavar="DIR",
                       help="also copy the run's reference files to DIR and redraw its figures there")
    if sweep:
        add_sweep_flags(p)
    return p


def add_sweep_flags(p):
    """The flags of a sweep over several processes, GPUs or machines (docs/CLUSTER.md)."""
    p.add_argument("--shard", metavar="I/N",
                   help="run share I of N of the nets (balanced by predicted cost) into the same "
                        "run folder; the last shard to finish writes the analysis (default: a "
                        "SLURM array task's share, else every net)")
    p.add_argument("--analyse", action="store_true",
                   help="train nothing: write the analysis and figures of a run whose nets are "
                        "all finished (e.g. by its shards)")
    p.add_argument("--devices", nargs="+", metavar="GPU",
                   help="CUDA devices (indices) to use, one net on each at a time (default: every "
                        "visible GPU)")
    p.add_argument("--plan", type=int, metavar="N",
                   help="print how N shards would split the nets, with predicted hours, and exit")


def resolve(args, presets: dict, options, **rules) -> dict:
    """The preset's values, the command line's where given, every one checked; plus the
    common settings (device, precision, threads, workers, output folders).

    ``rules`` are experiment rules the checks read (``min_seeds``, ``min_probe_steps``)."""
    preset = presets[args.preset]
    s = dict(rules)
    for name, option in map(_named, options):
        given = getattr(args, name, None)
        value = given if given is not None else preset.get(name)
        s[name] = option.check(value, s) if option.check is not None and value is not None else value
    s["preset"] = args.preset
    if "depths" in options:
        s["widths"] = widths_by_depth(s["depths"], s.get("width"), preset.get("widths"))
    s.update(common(args))
    return s


def common(args) -> dict:
    """The flags every script shares, checked (nothing is created)."""
    threads = positive_int("--threads", args.threads, MAX_THREADS) if args.threads is not None else 1
    device = resolve_device(args.device)
    devices = resolve_devices(getattr(args, "devices", None), device)
    workers = check_workers(getattr(args, "workers", None), device, devices)
    for flag in ("out", "publish", "data_dir"):
        check_path_text(flag, getattr(args, flag, None))
    check_not_paper(args.out, getattr(args, "publish", None))
    for flag in ("out", "publish"):
        if getattr(args, flag, None) is not None:
            check_writable_dir(getattr(args, flag), f"--{flag}")
    return {"device": str(device), "precision": args.precision, "threads": threads,
            "workers": workers, "data_dir": args.data_dir, "out": args.out,
            "publish": getattr(args, "publish", None), "devices": devices, **sweep_flags(args)}


def sweep_flags(args) -> dict:
    """--shard (or the SLURM array task's), --analyse and --plan, checked; a script without
    them (``parser(sweep=False)``) runs every net itself."""
    if not hasattr(args, "analyse"):
        return {"shard": (0, 1), "analyse": False, "plan": None}
    plan = positive_int("--plan", args.plan, 10_000) if args.plan is not None else None
    return {"shard": resolve_shard(args.shard), "analyse": args.analyse, "plan": plan}


def resolve_devices(given, device) -> list | None:
    """The CUDA device indices a sweep's workers use, one each (None on the CPU)."""
    if device.type != "cuda":
        if given:
            raise ValueError(f"--devices {' '.join(given)}: GPUs only (this run is on {device})")
        return None
    count = torch.cuda.device_count()
    if not given:
        return list(range(count))
    indices = []
    for text in ",".join(given).split(","):
        if not text.strip().isdigit() or int(text) >= count:
            raise ValueError(f"--devices {' '.join(given)}: give GPU indices from 0 to "
                             f"{count - 1} (this machine sees {count})")
        indices.append(int(text))
    if len(set(indices)) != len(indices):
        raise ValueError(f"--devices {' '.join(given)}: each GPU once (one net per GPU at a time)")
    return indices


def check_workers(workers, device, devices) -> int:
    """Processes running cells: the CPU's cores by default on the CPU; on CUDA one per GPU."""
    if workers is not None:
        positive_int("--workers", workers, 256)
    if device.type != "cuda":
        return workers if workers is not None else (os.cpu_count() or 1)
    if workers is not None and workers > len(devices):
        raise ValueError(f"--workers {workers}: on CUDA each worker has a GPU of its own, one net "
                         f"at a time; give at most {len(devices)} (or more --devices)")
    return workers if workers is not None else len(devices)


def check_path_text(flag: str, value):
    """A path given on the command line means what it says: not empty, no control characters,
    not a ``~`` the shell left unexpanded (quoted)."""
    name = f"--{flag.replace('_', '-')}"
    if value is None:
        return
    if not str(value).strip():
        raise ValueError(f"{name} '': give a folder (an empty path would mean the current one)")
    if any(ord(c) < 32 for c in str(value)):
        raise ValueError(f"{name} {str(value)!r}: a path with a line break or another control "
                         "character (a paste gone wrong?); give the folder's name alone")
    if str(value).startswith("~"):
        raise ValueError(f"{name} {value}: the shell did not expand the ~ (it was quoted); write "
                         f"$HOME{str(value)[1:] if str(value).startswith('~/') else '/...'} or the "
                         "full path")


def check_not_paper(out, publish):
    """``--out`` may not put a run inside the committed references (results/paper): they
    change only through ``--publish``."""
    if out is None or not str(out).strip():
        return
    target = Path(os.path.realpath(out))          # (a link loop is the file system's to report)
    paper = Path(os.path.realpath(PAPER_ROOT))
    if target == paper or paper in target.parents:
        raise ValueError(f"--out {out}: inside {PAPER_ROOT}, the committed references; write runs "
                         "elsewhere (default results/runs) and update the references with "
                         "--publish results/paper/<experiment>")


def widths_by_depth(depths, width=None, widths=None) -> dict:
    """{depth: width}: ``width`` for every depth if given, else the preset's width of the
    depth's unit block."""
    if width is not None:
        return {d: width for d in depths}
    widths = widths or {}
    return {d: int(widths.get(resolve_cifar_block(d), 16)) for d in depths}


def describe_widths(widths: dict) -> str:
    by = {}
    for d, w in sorted(widths.items()):
        by.setdefault(w, []).append(str(d))
    return "; ".join(f"width {w} at {', '.join(ds)} layers" for w, ds in by.items())


def unit_kinds(s) -> list:
    """The unit kinds of a sweep: ``unit_kinds`` if given, else those of ``versions``."""
    if s.get("unit_kinds"):
        return list(s["unit_kinds"])
    return [resolve_unit_kind(version=v) for v in (s.get("versions") or VERSIONS)]


def paper_schedule(s, length=None) -> dict:
    """The paper's schedule at the run's lr with its fixed warm-up (``warmup_steps``), its
    divisions placed on ``length`` updates (default the run's steps; a longer length leaves
    a short run the first iterations of a long one, before any division)."""
    return Schedule.paper(length or s["steps"], s.get("lr") or 0.1,
                          warmup_steps=s["warmup_steps"]).as_dict()
