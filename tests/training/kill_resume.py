"""The harness of the kill-and-resume tests: a real training process is killed with SIGKILL inside an epoch and
a new one resumes from the last checkpoint; its final weights must equal an uninterrupted run's."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch


def kill_then_resume(script: Path, tmp_path: Path, env: dict, wait_s: float = 60) -> tuple[dict, dict]:
    """`script MODE CHECKPOINT_DIR WEIGHTS_OUT` trains (slowly with MODE "slow") and saves its final weights.
    Runs it slowly, kills it inside its third epoch (once epoch index 1 is checkpointed), resumes it, and runs it
    uninterrupted from scratch; returns (resumed, uninterrupted) state dicts."""
    from safetensors.torch import load_file

    ckpt = tmp_path / "ckpt"
    proc = subprocess.Popen([sys.executable, str(script), "slow", str(ckpt), str(tmp_path / "never.st")], env=env)
    deadline = time.time() + wait_s
    while time.time() < deadline:
        state = ckpt / "latest" / "state.json"
        if state.exists() and json.loads(state.read_text())["epoch"] >= 1:
            time.sleep(0.1)
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert json.loads((ckpt / "latest" / "state.json").read_text())["epoch"] < 3, "killed too late to test"
    subprocess.run([sys.executable, str(script), "fast", str(ckpt), str(tmp_path / "resumed.st")], env=env, check=True)
    subprocess.run([sys.executable, str(script), "fast", str(tmp_path / "fresh"), str(tmp_path / "full.st")],
                   env=env, check=True)
    return load_file(str(tmp_path / "resumed.st")), load_file(str(tmp_path / "full.st"))


def assert_same_weights(resumed: dict[str, torch.Tensor], full: dict[str, torch.Tensor]) -> None:
    assert resumed.keys() == full.keys()
    for k, v in full.items():
        assert torch.equal(resumed[k], v), k
