"""Benchmark: the cost of a SignalProbe on a training step, measured side by side.

For each configuration, blocks of ``every`` probed and unprobed training steps (forward,
backward, SGD step; one step in ``every`` probed) alternate in one process on the same
model and batch; after warm-up, the median step time of each is printed, and the median of
the ratios of adjacent pairs. Also the bytes the probe holds between steps.
Writes results/paper/bench_probes.csv (or --out).

    python experiments/bench_probes.py                 # the issue's four nets, CPU (+ CUDA if present)
    python experiments/bench_probes.py --repeats 3 --configs 164   # quicker
"""
import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from probes import SignalProbe  # noqa: E402
from resnet_lab import cifar_resnet  # noqa: E402
from resnet_lab.cli import run_main  # noqa: E402
from resnet_lab.runs import write_table  # noqa: E402

# depth -> (width, batch, image size), as issue 3 specifies
CONFIGS = {164: (16, 128, 16), 1001: (8, 128, 8)}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_one(depth, version, every, device, repeats, warmup):
    width, batch, size = CONFIGS[depth]
    torch.manual_seed(0)
    net = cifar_resnet(depth, version=version, width=width).to(device)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    probe = SignalProbe(net, every=every)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None

    def train_step():
        opt.zero_grad(set_to_none=True)
        if amp is None:
            loss = F.cross_entropy(net(x), y)
        else:
            with amp:
                loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()

    def plain():
        for _ in range(every):          # as many steps as the probed block: same averaging
            train_step()

    def probed():
        with probe:
            for _ in range(every):      # every=k: k steps, one probed
                train_step()
                probe.step()

    times = {"plain": [], "probed": []}
    for i in range(warmup + repeats):
        for name, fn in (("plain", plain), ("probed", probed)) if i % 2 == 0 else (("probed", probed), ("plain", plain)):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            if i >= warmup:
                times[name].append((time.perf_counter() - t0) / every)
    plain_s, probed_s = statistics.median(times["plain"]), statistics.median(times["probed"])
    # The ratio is the median over adjacent (plain, probed) pairs: on a shared machine a
    # plain step alone varies by +-15% over seconds, which pairs cancel and medians don't.
    ratio = statistics.median(b / a for a, b in zip(times["plain"], times["probed"]))
    return {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
            "depth": depth, "version": version, "width": width, "batch": batch, "image": size,
            "every": every, "step_s": plain_s, "probed_step_s": probed_s, "ratio": ratio,
            "probe_bytes": probe.nbytes(), "repeats": repeats, "threads": torch.get_num_threads()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=int, nargs="+", default=list(CONFIGS), choices=list(CONFIGS),
                        help="depths to measure (default: 164 1001)")
    parser.add_argument("--every", type=int, nargs="+", default=[1, 10], help="probe every k steps (default: 1 10)")
    parser.add_argument("--repeats", type=int, default=11, help="timed steps of each kind (default 11)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each kind first (default 2)")
    parser.add_argument("--devices", nargs="+", default=None, choices=["cpu", "cuda"],
                        help="default: cpu, and cuda when available")
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch (default: its own choice)")
    parser.add_argument("--out", default="results/paper/bench_probes.csv", help="CSV to write")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if "cuda" in devices and not torch.cuda.is_available():
        raise ValueError("--devices cuda: CUDA is not available on this machine; valid here: cpu")
    rows = []
    for device in devices:
        for depth in args.configs:
            for version in (1, 2):
                for every in args.every:
                    row = bench_one(depth, version, every, torch.device(device), args.repeats, args.warmup)
                    rows.append(row)
                    print(f"{device:4s} depth {depth:4d} V{version} every={every:<3d} "
                          f"step {row['step_s'] * 1e3:8.1f} ms  probed {row['probed_step_s'] * 1e3:8.1f} ms  "
                          f"ratio {row['ratio']:.3f}  probe {row['probe_bytes'] / 1024:.0f} KiB", flush=True)
    df = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_table(out, df)
    print(f"wrote {out}")


if __name__ == "__main__":
    run_main(main)
