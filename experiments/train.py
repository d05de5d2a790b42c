"""Train a registered network with the paper's recipe and write a run folder.

    python experiments/train.py --model cifar_resnet110_v2                  # quick preset: digits
    python experiments/train.py --model cifar_resnet1001_v2 --width 8 --steps 200 --grad-checkpointing
    python experiments/train.py --model cifar_resnet164_v1 --preset paper --data-dir data --seeds 0 1 2
    torchrun --nproc_per_node=4 experiments/train.py --model cifar_resnet1001_v2 --preset paper

The run folder (results/runs/train/<model>_<dataset>_seed<seed>_<hash of the settings>/) holds
config.json, metrics.csv.gz (step, epoch, split, metric, value), checkpoint.pt and, with
--probe-every, probe.csv.gz. Running the same command again continues an unfinished run from its
last checkpoint (a finished one is left as it is); --resume DIR continues DIR with the settings
saved in it. Several seeds run one after the other; a diverged run does not stop the others.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from analysis.runner import says_how_to_resume  # noqa: E402
from probes import ProbeCallback  # noqa: E402
from resnet_lab import create_model, list_models  # noqa: E402
from resnet_lab.runs import settings
from resnet_lab.runs.cli import resolve_device, run_main  # noqa: E402
from resnet_lab.engine.data import load_dataset  # noqa: E402
from resnet_lab.engine.memory import check_fits, training_bytes  # noqa: E402
from resnet_lab.io.folders import DEFAULT_ROOT, RunDir, check_writable_dir, read_config, settings_id  # noqa: E402
from resnet_lab.engine.schedule import Schedule  # noqa: E402
from resnet_lab.runs.shards import select_shard  # noqa: E402
from resnet_lab.engine.training import TrainSettings, setup_distributed, train  # noqa: E402
from resnet_lab.networks.units import UNIT_KINDS  # noqa: E402

EXPERIMENT = "train"
PRESETS = {
    "quick": dict(dataset="digits", steps=1000, batch_size=128, lr=0.1, eval_every=100,
                  checkpoint_every=100, seeds=[0]),
    "paper": dict(dataset="cifar10", steps=64000, batch_size=128, lr=0.1, eval_every=1000,
                  checkpoint_every=2000, seeds=[0]),
    "smoke": dict(dataset="digits", steps=20, batch_size=32, lr=0.1, eval_every=10,
                  checkpoint_every=10, seeds=[0]),
}
OPTIONS = ("seeds", "steps", "batch_size", "lr", "dataset")
# The settings that define a run (its folder name hashes them; --resume restores them).
RUN_KEYS = ("model", "width", "unit_kind", "dataset", "data_dir", "steps", "batch_size", "lr",
            "eval_every", "checkpoint_every", "grad_checkpointing", "probe_every", "sync_bn", "device",
            "precision", "threads", "preset", "seed")


def parser():
    p = settings.parser(__doc__, PRESETS, OPTIONS, prog="experiments/train.py", publish=False,
                        sweep=False)
    p.add_argument("--model", help="registered network name (python -m resnet_lab --list), "
                                   "e.g. cifar_resnet164_v2; required unless --resume")
    p.add_argument("--width", type=int, help="base width of a CIFAR net (default the model's, 16)")
    p.add_argument("--unit-kind", choices=UNIT_KINDS, help="residual unit kind, replacing the name's version")
    p.add_argument("--eval-every", type=int, help="test-set evaluation period in steps (default: the preset's)")
    p.add_argument("--checkpoint-every", type=int, help="checkpoint period in steps (default: the preset's)")
    p.add_argument("--grad-checkpointing", action="store_true",
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
    """Per-seed run settings and the output root, from the command line or a --resume folder;
    every value checked before anything is written."""
    if args.resume:
        folder = Path(args.resume)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"--resume: {folder} is not a run folder (no config.json)")
        saved = read_config(folder / "config.json")["args"]
        return [saved], folder.parent.parent
    if args.model is None:
        raise ValueError("--model is required (one of python -m resnet_lab --list), or --resume RUN_DIR")
    if args.model not in list_models():
        raise ValueError(f"--model {args.model}: unknown; list them with python -m resnet_lab --list")
    s = settings.resolve(args, PRESETS, OPTIONS)
    preset = PRESETS[args.preset]
    for flag in ("width", "eval_every", "checkpoint_every", "probe_every"):
        value = getattr(args, flag)
        limit = settings.MAX_WIDTH if flag == "width" else None
        s[flag] = settings.positive_int(f"--{flag.replace('_', '-')}", value, limit) \
            if value is not None else preset.get(flag)
    s.update(model=args.model, unit_kind=args.unit_kind, grad_checkpointing=args.grad_checkpointing,
             sync_bn=args.sync_bn)
    common = {key: s.get(key) for key in RUN_KEYS if key != "seed"}
    runs = [dict(common, seed=seed) for seed in select_shard(s["seeds"], args.shard)]
    return runs, Path(args.out) if args.out else DEFAULT_ROOT


def build_model(s, data):
    overrides = {"num_classes": data.num_classes}
    if data.in_channels != 3:
        overrides["in_channels"] = data.in_channels
    overrides.update({k: s[k] for k in ("width", "unit_kind") if s.get(k) is not None})
    try:
        return create_model(s["model"], **overrides)
    except TypeError as err:
        raise ValueError(f"{s['model']} cannot be built with {overrides}: {err}") from None


def run_id(s) -> str:
    return f"{s['model']}_{s['dataset']}_seed{s['seed']}_{settings_id(s)}"


def train_settings(s, device) -> TrainSettings:
    return TrainSettings(steps=s["steps"], batch_size=s["batch_size"], seed=s["seed"], device=device,
                         schedule=Schedule.paper(s["steps"], s.get("lr") or 0.1),
                         eval_every=s["eval_every"], checkpoint_every=s["checkpoint_every"],
                         grad_checkpointing=s["grad_checkpointing"], sync_bn=s["sync_bn"],
                         precision=s.get("precision", "fp32"))


def main(argv=None):
    args = parser().parse_args(argv)
    runs, out = settings_from(args)
    if not runs:
        print(f"shard {args.shard}: no seeds to run")
        return 0
    first = runs[0]
    torch.set_num_threads(first.get("threads") or 1)
    rank, world, device = setup_distributed(resolve_device(first["device"]))
    # Everything is checked before any folder is made: data, model, settings, output root.
    data = load_dataset(first["dataset"], first["data_dir"])
    with torch.device("meta"):
        model = build_model(first, data)
    for s in runs:
        train_settings(s, device).resolved(len(data.train_x), world)
    check_writable_dir(out, "--out" if args.out else "--out (default results/runs)")
    need = training_bytes(model, (data.in_channels, *data.image_size),
                          first["batch_size"] // world)
    check_fits(need, device, first["model"] + (f" at width {first['width']}" if first["width"] else ""),
               "use a smaller --width or --batch-size, --grad-checkpointing, or more memory")

    for s in runs:
        config = out / EXPERIMENT / run_id(s) / "config.json"
        status = read_config(config).get("status") if config.is_file() else None
        if status in ("completed", "diverged"):
            if rank == 0:
                print(f"{config.parent}: already {status}; nothing to do")
            continue
        run = RunDir.create(EXPERIMENT, s, preset=PRESETS[s["preset"]], out=out, run_id=run_id(s),
                            lock=rank == 0)
        torch.manual_seed(s["seed"])
        callbacks = [] if s["probe_every"] is None else [ProbeCallback(every=s["probe_every"])]
        with says_how_to_resume("experiments/train.py", argv):
            result = train(build_model(s, data), data, run, train_settings(s, device),
                           callbacks=callbacks, quiet=args.quiet)
        run.release_lock()
        if rank == 0:
            test = result.metrics.query("split == 'test' and metric == 'error'")
            final = f", test error {test.value.iloc[-1]:.4f}" if len(test) else ""
            print(f"wrote {run.path} ({result.status} at step {result.step}{final})")
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    run_main(main)
