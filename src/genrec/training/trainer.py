"""The one training loop for every torch model in genrec.

A model hands the Trainer three things and nothing else:

- a `torch.nn.Module` implementing `training_step(batch, ctx)`, which returns either one loss tensor (for the
  parameter group being trained) or an iterator of `(group, loss)` pairs. Each pair is back-propagated and
  stepped before the next loss is computed, which is what a GAN (discriminator, then generator) or RecVAE
  (alternating encoder and decoder) needs. A module may define `param_groups() -> {name: [params]}` (default:
  one group "main") and `phases(epoch) -> [group, ...]` (default: one pass updating every group), and
  `start_phase(phase, epoch)`, called before each pass (RecVAE refreshes its prior there), and
  `epoch_metrics(epoch) -> {name: value}`, merged into the epoch's history record (CFGAN: D's accuracy);
- a dataset with `__len__` and `batch(indices) -> batch` (see `genrec.training.data`), and optionally
  `plan_batches(order, batch_size) -> [indices, ...]`, which regroups an epoch's shuffled order into batches
  (deterministically, keeping the batch count; sequence models put windows of similar length together);
- optionally `validate() -> {metric: value}`, called after each epoch for early stopping.

The Trainer owns shuffling (seeded per epoch, so a resumed run replays exactly the same batches), optimisers
(Adam/AdamW), gradient clipping, learning-rate schedules, early stopping with the best weights restored,
atomic per-epoch checkpoints and resume, `history.jsonl`, tqdm progress, the device and autocast on GPU, and
distributed data parallel training when `torch.distributed` is initialised (torchrun).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydantic
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from genrec.training.checkpoint import load_checkpoint, save_checkpoint, state_to_cpu


class TrainOptions(pydantic.BaseModel):
    """How to train (not what to learn): the model's own hyperparameters stay in its constructor."""

    model_config = pydantic.ConfigDict(extra="forbid")

    optimizer: Literal["adam", "adamw"] = "adam"
    fused: bool = False  # the fused Adam/AdamW kernel: one pass per parameter (about 5x faster on CPU for big tables)
    weight_decay: float = 0.0
    grad_clip: float | None = None
    lr_schedule: Literal["constant", "cosine", "linear", "step"] = "constant"
    warmup_epochs: int = 0
    monitor: str = "ndcg@20"
    patience: int | None = None
    eval_every: int = 1
    checkpoint_dir: str | None = None
    resume: bool = True
    device: str = "auto"
    amp: bool = True  # bfloat16 autocast on GPU (float32 weights, gradients and optimizer state)
    amp_cpu: bool = False  # ... and on CPU: opt-in, for CPUs with bfloat16 instructions (AVX512-BF16, AMX)
    progress: bool | None = None
    log_every: int = 50
    max_batches_per_epoch: int | None = None
    max_seconds: float | None = None  # time budget: no new epoch starts that the last one's length says would overrun
    keep_freed_memory: bool = False  # glibc keeps freed memory for reuse (see keep_freed_memory below)


@dataclass
class StepContext:
    """What a training step may need: the epoch, the global update count, the phase and the device."""

    epoch: int
    step: int
    phase: str
    device: torch.device
    n_epochs: int
    rank: int = 0
    world_size: int = 1


@dataclass
class FitResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_metric: float | None = None
    seconds: float = 0.0


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def linear_anneal(step: int, total_steps: int, cap: float) -> float:
    """KL weight that rises linearly from 0 to `cap` over `total_steps` updates (Liang et al. 2018)."""
    if total_steps <= 0:
        return cap
    return min(cap, cap * step / total_steps)


def keep_freed_memory() -> None:
    """Make glibc serve every allocation from its heap and keep freed memory for reuse (Linux/glibc; a no-op
    elsewhere). A training step frees and re-allocates the same large tensors (for 500 users x 41k items: logits
    and gradients of 80-100 MB each); by default glibc maps each one above 32 MB afresh and the kernel faults
    and zero-fills its pages on first touch, ~0.1 s per 100 MB on a shared 2-core machine, which is as much
    as a GEMM on them. The cost: the process keeps its peak memory until it exits."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux") or not ctypes.util.find_library("c"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if hasattr(libc, "mallopt"):
        libc.mallopt(-4, 0)  # M_MMAP_MAX: no mmap-backed allocations
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: never return the heap's top to the OS


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


class Trainer:
    """Train `module` on `data` for `epochs` epochs of `batch_size` examples with learning rate `lr`."""

    def __init__(self, epochs: int, batch_size: int, lr: float, seed: int = 0, options: dict | None = None):
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.options = TrainOptions(**(options or {}))
        from genrec.distributed import init_from_env, local_device

        self.distributed = init_from_env()  # under torchrun: joins the process group (gloo on CPU, NCCL on GPU)
        self.rank = dist.get_rank() if self.distributed else 0
        self.world_size = dist.get_world_size() if self.distributed else 1
        self.device = resolve_device(self.options.device)
        if self.distributed:  # one GPU per process: cuda:LOCAL_RANK
            self.device = local_device(self.device)

    # optimisers and schedules -------------------------------------------------------------------------------
    def _optimizers(self, module: torch.nn.Module) -> dict[str, torch.optim.Optimizer]:
        groups = module.param_groups() if hasattr(module, "param_groups") else {"main": list(module.parameters())}
        cls = torch.optim.AdamW if self.options.optimizer == "adamw" else torch.optim.Adam
        extra = {"fused": True} if self.options.fused else {}
        return {
            name: cls([p for p in params if p.requires_grad], lr=self.lr, weight_decay=self.options.weight_decay,
                      **extra)
            for name, params in groups.items()
        }

    def _lr_factor(self, epoch: int) -> float:
        o = self.options
        if epoch < o.warmup_epochs:
            return (epoch + 1) / (o.warmup_epochs + 1)
        t = (epoch - o.warmup_epochs) / max(self.epochs - o.warmup_epochs, 1)
        if o.lr_schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        if o.lr_schedule == "linear":
            return max(1.0 - t, 0.0)
        if o.lr_schedule == "step":
            return 0.1 ** int(t * 3)
        return 1.0

    # batches ----------------------------------------------------------------------------------------------
    def epoch_indices(self, n: int, epoch: int) -> np.ndarray:
        """The example order for `epoch`: a permutation seeded by (seed, epoch), the same on every rank."""
        return np.random.default_rng([self.seed, epoch]).permutation(n)

    def _batches(self, data, epoch: int) -> list[np.ndarray]:
        """This rank's batches. `batch_size` is global: under DDP every rank takes a strided share of each
        batch (the last one padded by wrapping around when it has fewer examples than ranks), so N processes
        make the same updates on the same examples as one process, and every rank makes the same number."""
        idx = self.epoch_indices(len(data), epoch)
        if hasattr(data, "plan_batches"):  # the dataset regroups the shuffled examples (e.g. by length)
            batches = data.plan_batches(idx, self.batch_size)
        else:
            batches = [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        if self.options.max_batches_per_epoch:
            batches = batches[: self.options.max_batches_per_epoch]
        if self.world_size > 1:
            batches = [np.resize(b, max(len(b), self.world_size))[self.rank :: self.world_size] for b in batches]
        return batches

    # the loop ---------------------------------------------------------------------------------------------
    def fit(self, module: torch.nn.Module, data, validate=None, history_path: str | Path | None = None) -> FitResult:
        """Train in place; returns the per-epoch history. With early stopping the best weights are restored."""
        start_all = time.perf_counter()
        seed_everything(self.seed)
        if self.options.keep_freed_memory:
            keep_freed_memory()
        module.to(self.device)
        optimizers = self._optimizers(module)
        net = self._wrap(module)
        result, start_epoch, step, best_state = FitResult(), 0, 0, None
        ckpt_dir = self.options.checkpoint_dir
        if ckpt_dir and self.options.resume:
            meta = load_checkpoint(ckpt_dir, module, optimizers, self.device)
            if meta is not None:
                start_epoch, step = meta["epoch"] + 1, meta["step"]
                result.history = meta["history"]
                result.best_epoch, result.best_metric = meta.get("best_epoch"), meta.get("best_metric")
                best_file = Path(ckpt_dir) / "best.safetensors"
                if best_file.exists():
                    from safetensors.torch import load_file

                    best_state = load_file(str(best_file))
        bad_epochs = 0 if result.best_epoch is None else (start_epoch - 1 - result.best_epoch)
        for epoch in range(start_epoch, self.epochs):
            t0 = time.perf_counter()
            losses, step = self._run_epoch(module, net, data, optimizers, epoch, step)
            losses = self._all_reduce_metrics(losses)  # under DDP: the mean over ranks, i.e. over whole batches
            record: dict[str, Any] = {"epoch": epoch, "step": step, **losses,
                                      "lr": self.lr * self._lr_factor(epoch)}
            if hasattr(module, "epoch_metrics"):  # the module's own training curves (e.g. a GAN's D accuracy)
                record.update(module.epoch_metrics(epoch))
            improved = False
            if validate is not None and (epoch + 1) % self.options.eval_every == 0:
                module.eval()
                with torch.no_grad():
                    metrics = self._all_reduce_metrics(validate())
                record.update({f"val_{k}": v for k, v in metrics.items()})
                value = metrics.get(self.options.monitor)
                if value is not None and (result.best_metric is None or value > result.best_metric):
                    result.best_metric, result.best_epoch, improved = float(value), epoch, True
                    best_state = state_to_cpu(module)
                    bad_epochs = 0
                else:
                    bad_epochs += 1
            record["seconds"] = time.perf_counter() - t0
            result.history.append(record)
            self._log(record, history_path, improved, best_state, module, optimizers, result)
            if self.options.patience is not None and bad_epochs > self.options.patience:
                break
            if self._out_of_time(start_all, record["seconds"]):
                break
        if best_state is not None:
            module.load_state_dict(best_state)
        module.eval()
        result.seconds = time.perf_counter() - start_all
        return result

    def _run_epoch(self, module, net, data, optimizers, epoch: int, step: int) -> tuple[dict[str, float], int]:
        # dropout and sampling replay exactly after a resume; each rank draws its own stream (rank 0's is the
        # single-process one)
        torch.manual_seed(self.seed * 100_003 + epoch + 7_919 * self.rank)
        for opt in optimizers.values():
            for g in opt.param_groups:
                g["lr"] = self.lr * self._lr_factor(epoch)
        phases = module.phases(epoch) if hasattr(module, "phases") else [None]
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        module.train()
        show = self.options.progress if self.options.progress is not None else None
        for phase in phases:
            if hasattr(module, "start_phase"):
                module.start_phase(phase, epoch)
            batches = self._batches(data, epoch if phase is None else epoch * 1000 + phases.index(phase))
            bar = tqdm(batches, desc=f"epoch {epoch + 1}/{self.epochs}" + (f" {phase}" if phase else ""),
                       disable=(show is False) or self.rank != 0, leave=False, unit="batch")
            for idx in bar:
                batch = _to_device(data.batch(idx), self.device)
                ctx = StepContext(epoch, step, phase or "main", self.device, self.epochs, self.rank, self.world_size)
                for group, loss in self._losses(net, batch, ctx, phase):
                    opt = optimizers[group]
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if self.options.grad_clip:
                        torch.nn.utils.clip_grad_norm_(
                            [p for g in opt.param_groups for p in g["params"]], self.options.grad_clip)
                    opt.step()
                    key = f"loss_{group}" if len(optimizers) > 1 else "loss"
                    sums[key] = sums.get(key, 0.0) + float(loss.detach())
                    counts[key] = counts.get(key, 0) + 1
                step += 1
                if counts and step % self.options.log_every == 0:
                    bar.set_postfix({k: f"{sums[k] / counts[k]:.4g}" for k in sums})
        return {k: sums[k] / counts[k] for k in sums}, step

    def _losses(self, net, batch, ctx: StepContext, phase: str | None) -> Iterator[tuple[str, torch.Tensor]]:
        use_amp = self.options.amp and (self.device.type == "cuda"
                                        or (self.device.type == "cpu" and self.options.amp_cpu))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = net(batch, ctx) if isinstance(net, torch.nn.parallel.DistributedDataParallel) else \
                net.training_step(batch, ctx)
        if torch.is_tensor(out):
            yield (phase or "main"), out
        else:
            yield from out

    # distributed ----------------------------------------------------------------------------------------
    def _wrap(self, module: torch.nn.Module):
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        if not hasattr(module, "forward") or type(module).forward is torch.nn.Module.forward:
            module.forward = module.training_step  # DDP calls forward; route it to the training step
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=True)

    def _out_of_time(self, start: float, last_epoch_seconds: float) -> bool:
        """Whether another epoch as long as the last would pass `max_seconds`; under DDP all ranks stop together
        when any of them would (each has its own clock)."""
        if self.options.max_seconds is None:
            return False
        over = time.perf_counter() - start + last_epoch_seconds > self.options.max_seconds
        return self._all_reduce_metrics({"over": float(over)})["over"] > 0

    def _all_reduce_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """The mean over ranks of each value, what every rank then sees: batch losses, the out-of-time vote, and
        the validation metrics (which the validator already combines over ranks, so they come back unchanged)."""
        if not self.distributed:
            return metrics
        from genrec.distributed import all_reduce_sum

        keys = sorted(metrics)
        sums = all_reduce_sum([metrics[k] for k in keys], self.device)
        return {k: v / self.world_size for k, v in zip(keys, sums)}

    # logging and checkpoints ----------------------------------------------------------------------------
    def _log(self, record, history_path, improved, best_state, module, optimizers, result: FitResult) -> None:
        if self.rank != 0:
            return
        if history_path is not None:  # rewritten whole and renamed: a resumed run never duplicates an epoch
            path = Path(history_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in result.history))
            tmp.replace(path)
        if self.options.checkpoint_dir:
            ckpt = Path(self.options.checkpoint_dir)
            if improved and best_state is not None:
                from safetensors.torch import save_file

                tmp = ckpt / ".best.tmp"
                ckpt.mkdir(parents=True, exist_ok=True)
                save_file({k: v.contiguous() for k, v in best_state.items()}, str(tmp))
                tmp.replace(ckpt / "best.safetensors")
            save_checkpoint(ckpt, module, optimizers, {
                "epoch": record["epoch"], "step": record["step"], "history": result.history,
                "best_epoch": result.best_epoch, "best_metric": result.best_metric,
            })


def _to_device(batch, device: torch.device):
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch
