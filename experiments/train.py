"""Train a registered network with the paper's recipe and write a run folder.

    python experiments/train.py --model cifar_resnet110_v2                  # quick preset: digits
    python experiments/train.py --model cifar_resnet1001_v2 --width 8 --steps 200 --grad-checkpoint
    python experiments/train.py --model cifar_resnet164_v1 --preset paper --data-dir data --seeds 0 1 2
    torchrun --nproc_per_node=4 experiments/train.py --model cifar_resnet1001_v2 --preset paper

The run folder (results/runs/train/<model>_<dataset>_seed<seed>_<hash of the settings>/) holds
config.json, metrics.csv.gz (step, epoch, split, metric, value), checkpoint.pt and, with
--probe-every, probe.csv.gz. Running the same command again continues an unfinished run from its
last checkpoint (a finished one is left as it is); --resume DIR continues DIR with the settings
saved in it. Several seeds run one after the other; a diverged run does not stop the others.
"""
import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from resnet_lab import create_model, list_models  # noqa: E402
from resnet_lab.cli import add_common_args, resolve_device, run_main  # noqa: E402
from resnet_lab.data import load_dataset  # noqa: E402
from resnet_lab.runs import DEFAULT_ROOT, RunDir, check_writable_dir  # noqa: E402
from resnet_lab.training import (check_train_args, select_shard, setup_distributed,  # noqa: E402
                                 train)
from resnet_lab.units import UNIT_KINDS  # noqa: E402

EXPERIMENT = "train"
PRESETS = {
    "quick": dict(dataset="digits", steps=1000, batch_size=128, eval_every=100, checkpoint_every=100,
                  seeds=[0]),
    "paper": dict(dataset="cifar10", steps=64000, batch_size=128, eval_every=1000, checkpoint_every=2000,
                  seeds=[0]),
    "smoke": dict(dataset="digits", steps=20, batch_size=32, eval_every=10, checkpoint_every=10, seeds=[0]),
}
# The settings that define a run (its folder name hashes them; --resume restores them).
RUN_KEYS = ("model", "width", "unit", "dataset", "data_dir", "steps", "batch_size", "eval_every",
            "checkpoint_every", "grad_checkpoint", "probe_every", "sync_bn", "device", "preset", "seed")


def parser():
    p = argparse.ArgumentParser(prog="experiments/train.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="registered network name (python -m resnet_lab --list), "
                                   "e.g. cifar_resnet164_v2; required unless --resume")
    p.add_argument("--width", type=int, help="base width of a CIFAR net (default the model's, 16)")
    p.add_argument("--unit", choices=UNIT_KINDS, help="residual unit kind, replacing the name's version")
    add_common_args(p, PRESETS)
    p.add_argument("--steps", type=int, help="training iterations; the lr schedule is the paper's "
                                             "scaled to them (default: the preset's)")
    p.add_argument("--batch-size", type=int, help="global batch size (default: the preset's, 128)")
    p.add_argument("--eval-every", type=int,
                   help="test-set evaluation period in steps (default: the preset's)")
    p.add_argument("--checkpoint-every", type=int, help="checkpoint period in steps (default: the preset's)")
    p.add_argument("--grad-checkpoint", action="store_true",
                   help="recompute each unit in the backward pass: less memory, about 1/3 more time")
    p.add_argument("--probe-every", type=int,
                   help="record a SignalProbe every K steps into probe.csv.gz (default: no probe)")
    p.add_argument("--sync-bn", action="store_true",
                   help="under torchrun on CUDA, BatchNorm statistics over the global batch")
    p.add_argument("--shard", help="run only every n-th seed starting at the i-th, as i/n")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run folder with its saved settings")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    return p


def settings_from(args) -> tuple[list[dict], Path]:
    """Per-seed run settings and the output root, from the command line or a --resume folder."""
    if args.resume:
        folder = Path(args.resume)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"--resume: {folder} is not a run folder (no config.json)")
        saved = json.loads((folder / "config.json").read_text())["args"]
        return [saved], folder.parent.parent
    if args.model is None:
        raise ValueError("--model is required (one of python -m resnet_lab --list), or --resume RUN_DIR")
    if args.model not in list_models():
        raise ValueError(f"unknown model {args.model!r}; list them with python -m resnet_lab --list")
    preset = PRESETS[args.preset]
    pick = lambda name: preset[name] if getattr(args, name) is None else getattr(args, name)
    common = {key: getattr(args, key, None) for key in RUN_KEYS if key != "seed"}
    common.update({k: pick(k) for k in ("dataset", "steps", "batch_size", "eval_every", "checkpoint_every")})
    seeds = select_shard(pick("seeds"), args.shard)
    return [dict(common, seed=seed) for seed in seeds], Path(args.out) if args.out else DEFAULT_ROOT


def build_model(s, data):
    overrides = {"num_classes": data.num_classes}
    if data.in_channels != 3:
        overrides["in_channels"] = data.in_channels
    overrides.update({k: s[k] for k in ("width", "unit") if s[k] is not None})
    try:
        return create_model(s["model"], **overrides)
    except TypeError as err:
        raise ValueError(f"{s['model']} cannot be built with {overrides}: {err}") from None


def run_id(s) -> str:
    digest = hashlib.sha1(json.dumps(s, sort_keys=True).encode()).hexdigest()[:8]
    return f"{s['model']}_{s['dataset']}_seed{s['seed']}_{digest}"


def main(argv=None):
    args = parser().parse_args(argv)
    runs, out = settings_from(args)
    if not runs:
        print(f"shard {args.shard}: no seeds to run")
        return 0
    first = runs[0]
    device = resolve_device(first["device"])
    rank, world, device = setup_distributed(device)
    # Everything is checked before any folder is made: data, model, settings, output root.
    data = load_dataset(first["dataset"], first["data_dir"])
    with torch.device("meta"):
        build_model(first, data)
    for s in runs:
        check_train_args(n_train=len(data.train_x), steps=s["steps"], batch_size=s["batch_size"],
                         world=world, eval_every=s["eval_every"], checkpoint_every=s["checkpoint_every"],
                         probe_every=s["probe_every"], sync_bn=s["sync_bn"], device=device)
    check_writable_dir(out)
    probe_factory = None
    if first["probe_every"] is not None:
        from probes import SignalProbe
        probe_factory = SignalProbe

    for s in runs:
        config = out / EXPERIMENT / run_id(s) / "config.json"
        status = json.loads(config.read_text())["status"] if config.is_file() else None
        if status in ("completed", "diverged"):
            if rank == 0:
                print(f"{config.parent}: already {status}; nothing to do")
            continue
        run = RunDir.create(EXPERIMENT, s, preset=PRESETS[s["preset"]], out=out, run_id=run_id(s))
        torch.manual_seed(s["seed"])
        model = build_model(s, data)
        result = train(model, data, run, steps=s["steps"], batch_size=s["batch_size"], seed=s["seed"],
                       device=device, eval_every=s["eval_every"], checkpoint_every=s["checkpoint_every"],
                       grad_checkpoint=s["grad_checkpoint"], sync_bn=s["sync_bn"],
                       probe_factory=probe_factory, probe_every=s["probe_every"] or 1, quiet=args.quiet)
        if rank == 0:
            test = result.metrics.query("split == 'test' and metric == 'error'")
            final = f", test error {test.value.iloc[-1]:.4f}" if len(test) else ""
            print(f"wrote {run.path} ({result.status} at step {result.step}{final})")
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    run_main(main)
