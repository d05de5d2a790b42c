"""Benchmark: the cost of a SignalProbe on a tapped torchvision ResNet-50's training step.

The model is torchvision's ``resnet50`` (random init) where torchvision imports, else the copy
with exactly its structure in tests/reference_resnets.py; ``probes.adapters.tapping.tap_model`` taps its
16 Bottleneck blocks. Blocks of ``--every`` probed and plain training steps (forward, backward,
SGD step; one step in ``--every`` probed) alternate in one process on the same model and batch;
after warm-up, the probed/plain ratio of each adjacent pair is taken and their median reported
(on a shared machine a plain step alone drifts by more than the probe costs; pairs cancel that),
by the wall clock (``ratio``) and by this process's CPU time (``cpu_ratio``, CPU only).

    python experiments/bench_tapped.py                     # batch 32, 64x64, every step probed
    python experiments/bench_tapped.py --repeats 7 --publish   # -> results/paper/bench_tapped.csv
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from probes import SignalProbe  # noqa: E402
from probes.adapters.tapping import tap_model  # noqa: E402
from resnet_lab.runs.cli import Parser, resolve_device, run_main  # noqa: E402
from resnet_lab.io.folders import check_writable_dir, device_name, write_table  # noqa: E402

DEFAULT_OUT = Path("results/runs/bench/bench_tapped.csv")
PUBLISHED = Path("results/paper/bench_tapped.csv")


def resnet50():
    """torchvision's resnet50 where it imports, else the structural copy; and which it is."""
    try:
        from torchvision.models import resnet50 as torchvision_resnet50
        return torchvision_resnet50(weights=None), "torchvision"
    except Exception:                    # not installed, or built for another torch
        sys.path.insert(0, str(ROOT / "tests"))
        from reference_resnets import resnet50 as copy_resnet50
        return copy_resnet50(), "tests/reference_resnets.py (torchvision's structure)"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def paired_times(plain, probed, device, repeats, warmup):
    """Wall and process CPU seconds of ``plain()`` and ``probed()``, alternating which goes
    first; warm-up pairs dropped. CPU time counts only this process's work, so other jobs on a
    shared machine disturb it less than the wall clock (they still share caches and memory)."""
    times = {"plain": [], "probed": []}
    for i in range(warmup + repeats):
        order = (("plain", plain), ("probed", probed)) if i % 2 == 0 else (("probed", probed), ("plain", plain))
        for name, fn in order:
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync(device)
            if i >= warmup:
                times[name].append((time.perf_counter() - t0, time.process_time() - c0))
    return times["plain"], times["probed"]


def bench(batch, size, every, repeats, warmup, device):
    torch.manual_seed(0)
    model, source = resnet50()
    model = model.to(device).train()
    handle = tap_model(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    probe = SignalProbe(model, every=every)

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    def plain():
        for _ in range(every):           # as many steps as the probed block
            train_step()

    def probed():
        with probe:
            for _ in range(every):
                train_step()
                probe.step()

    plain_t, probed_t = paired_times(plain, probed, device, repeats, warmup)
    plain_s, probed_s = [w for w, _ in plain_t], [w for w, _ in probed_t]
    ratios = [b / a for a, b in zip(plain_s, probed_s)]
    cpu_ratios = [b / a for (_, a), (_, b) in zip(plain_t, probed_t)]
    return {"model": "resnet50", "source": source, "units": len(handle.units), "batch": batch,
            "image": size, "every": every, "device": str(device),
            "cpu": device_name(device),
            "threads": torch.get_num_threads(), "pairs": repeats, "warmup": warmup,
            "step_s": statistics.median(plain_s) / every,
            "probed_step_s": statistics.median(probed_s) / every,
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "cpu_ratio": statistics.median(cpu_ratios) if device.type == "cpu" else None,
            "probe_rows_per_step": len(probe.collect()) // max(1, len(probe._records)),
            "probe_bytes": probe.nbytes(), "torch": torch.__version__}


def main(argv=None):
    p = Parser(prog="experiments/bench_tapped.py", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--size", type=int, default=64, help="input height and width (default 64)")
    p.add_argument("--every", type=int, default=1, help="probe one step in EVERY (default 1)")
    p.add_argument("--repeats", type=int, default=9, help="timed pairs (default 9)")
    p.add_argument("--warmup", type=int, default=2, help="untimed pairs first (default 2)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default 0: torch's choice)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--out", type=Path, default=None, help=f"CSV to write (default {DEFAULT_OUT})")
    p.add_argument("--publish", action="store_true", help=f"write {PUBLISHED} instead")
    args = p.parse_args(argv)
    for flag in ("batch", "size", "every", "repeats"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if args.warmup < 0 or args.threads < 0:
        raise ValueError("--warmup and --threads must not be negative")
    if args.publish and args.out is not None:
        raise ValueError("give --out or --publish, not both")
    out = PUBLISHED if args.publish else (args.out or DEFAULT_OUT)
    check_writable_dir(out.parent)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    row = bench(args.batch, args.size, args.every, args.repeats, args.warmup, device)
    print(f"{row['source']}: resnet50 ({row['units']} tapped units), batch {row['batch']}, "
          f"{row['image']}x{row['image']}, {row['device']} ({row['cpu']}, {row['threads']} threads), "
          f"every={row['every']}: step {row['step_s']:.3f} s, probed {row['probed_step_s']:.3f} s, "
          f"ratio {row['ratio']:.3f} (median of {row['pairs']} pairs, "
          f"{row['ratio_min']:.3f}-{row['ratio_max']:.3f})"
          + (f"; CPU-time ratio {row['cpu_ratio']:.3f}" if row["cpu_ratio"] is not None else ""))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_table(out, pd.DataFrame([row]))
    print(f"wrote {out}")


if __name__ == "__main__":
    run_main(main)
