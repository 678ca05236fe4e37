"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint is a folder `epoch-<n>/` holding `state.safetensors` (module parameters and buffers under
`module/`, optimizer tensors under `optim/<group>/<param>/<key>`) and `state.json` (epoch, global step,
optimizer hyperparameters, history, best metric). It is written to a temporary folder and renamed into place,
so a kill at any moment leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

LATEST = "latest"


def _optim_tensors(name: str, optim: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optim.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim/{name}/{pid}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}/{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_checkpoint(directory: str | Path, module: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer],
                    meta: dict[str, Any]) -> Path:
    """Write `directory/latest` atomically (tmp folder, then rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".ckpt-", dir=directory))
    tensors = {f"module/{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    optim_meta = {}
    for name, optim in optimizers.items():
        t, m = _optim_tensors(name, optim)
        tensors.update(t)
        optim_meta[name] = m
    save_file(tensors, str(tmp / "state.safetensors"))
    with open(tmp / "state.json", "w") as f:
        json.dump({**meta, "optimizers": optim_meta}, f)
        f.flush()
        os.fsync(f.fileno())
    target = directory / LATEST
    old = directory / f".{LATEST}.old"
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(directory: str | Path, module: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer],
                    device: torch.device) -> dict[str, Any] | None:
    """Restore module and optimizers from `directory/latest`; returns its meta, or None when there is none."""
    path = Path(directory) / LATEST
    if not (path / "state.json").exists():
        return None
    meta = json.loads((path / "state.json").read_text())
    tensors = load_file(str(path / "state.safetensors"), device=str(device))
    module.load_state_dict({k[len("module/"):]: v for k, v in tensors.items() if k.startswith("module/")})
    for name, optim in optimizers.items():
        om = meta["optimizers"][name]
        state: dict[int, dict[str, Any]] = {}
        prefix = f"optim/{name}/"
        for key, value in tensors.items():
            if key.startswith(prefix):
                pid, k = key[len(prefix):].split("/", 1)
                state.setdefault(int(pid), {})[k] = value
        for key, value in om["scalars"].items():
            pid, k = key.split("/", 1)
            state.setdefault(int(pid), {})[k] = value
        optim.load_state_dict({"state": state, "param_groups": om["param_groups"]})
    return meta


def state_to_cpu(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the module's state (for keeping the best weights in memory)."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
