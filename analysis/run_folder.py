"""A run's folder: its id from the settings (the same command reopens, and resumes, the same
folder), where it lies, and opening it with what runs where."""
from __future__ import annotations

import platform
from pathlib import Path

from resnet_lab.io.folders import (DEFAULT_ROOT, RunDir, cpu_model, git_commit, git_dirty, now,
                                   settings_id)

# Settings that change where or how fast a run goes, not its numbers: left out of its id.
_NOT_IN_ID = ("workers", "out", "publish", "publish_over", "shard", "analyse", "devices", "plan")


def run_key(s: dict) -> tuple[dict, str]:
    """(the settings that identify a run, its id): the same command gets the same folder,
    whichever process, GPU or shard runs it."""
    key = {k: v for k, v in s.items() if k not in _NOT_IN_ID}
    return key, f"{s['preset']}-{settings_id(key)}"


def run_path(experiment, s: dict) -> Path:
    """Where the run folder of these settings is (or will be)."""
    return Path(s.get("out") or DEFAULT_ROOT) / experiment.name / run_key(s)[1]


def open_run(experiment, s: dict) -> RunDir:
    """The run folder of ``experiment`` (an ``Experiment``) with settings ``s``: its id
    comes from the settings, so the same command reopens (and resumes) the same folder; the
    process holds its lock while it lives (shared with the other shards of a sharded sweep).
    Records where it runs; says what will run, and where."""
    key, run_id = run_key(s)
    i, n = s["shard"]
    shared = n > 1 or s["analyse"]
    where = {"host": platform.node(), "devices": describe_devices(s), "workers": s["workers"]}
    run = RunDir.create(experiment.name, key, preset=key, out=s.get("out"), run_id=run_id,
                        lock="shared" if shared else True,
                        note={"shard": f"{i}/{n}", **where} if shared else None)
    # The code that analyses (and, for new cells, trains): the report marks a result whose
    # code differs from the checkout's.
    run.update_config(code_commit=git_commit(), code_dirty=git_dirty())
    if n > 1:
        run.record_part("shards", f"{i}/{n}", {**where, "started": now()})
    else:
        run.update_config(devices=where["devices"])
    print(f"{experiment.describe(s)}\n-> {run.path}", flush=True)
    return run


def describe_devices(s: dict) -> list:
    """What the workers compute on: each GPU of ``devices`` by name, or the CPU."""
    if not s.get("devices"):
        return [f"cpu ({cpu_model()})"]
    import torch
    return [f"cuda:{k} ({torch.cuda.get_device_name(k)})" for k in s["devices"]]
