"""The pretraining loop: samples what the objective asks for, steps it, logs, checkpoints, resumes exactly.

The loop owns all I/O (the objective only returns a loss and metrics). A checkpoint is three files, each
written atomically, in ``<run>/checkpoints/``:

* ``encoder/`` (``encoder.safetensors`` + ``encoder.json``): what downstream users load;
* ``objective.safetensors``: every tensor of the objective (heads, target networks, queues);
* ``train_state.pt``: optimiser state, step, and the numpy / torch RNG states, loadable with
  ``torch.load(..., weights_only=True)``.

Resuming restores all three, so N steps in one go and N/2 + N/2 with a restart give identical weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldssl.data.episodes import EpisodeDataset
from worldssl.runtime.device import autocast
from worldssl.runtime.errors import CheckpointError, WorldsslError
from worldssl.runtime.io import atomic_open, torch_save
from worldssl.runtime.logger import Logger
from worldssl.ssl.base import SSLObjective
from worldssl.ssl.batch import SSLBatch


@dataclass
class PretrainSettings:
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    temporal_offset: int = 1  # k for "pairs" (frame t vs t+k)
    sequence_length: int = 8  # L for "sequences"
    log_every: int = 50
    save_every: int = 500
    seed: int = 0
    amp: bool | str = "auto"  # bf16 autocast on CUDA and on CPUs with bf16 matrix units (AMX)
    max_minutes: float | None = None  # stop (and checkpoint) after this much wall-clock time
    progress: bool = True


def sample_batch(ds: EpisodeDataset, kind: str, settings: PretrainSettings, rng: np.random.Generator,
                 device: torch.device) -> SSLBatch:
    """Draw the batch an objective of ``batch_kind`` ``kind`` needs, as tensors on ``device``."""
    def put(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(device, non_blocking=True)

    b = settings.batch_size
    if kind == "frames":
        return SSLBatch(put(ds.sample_transitions(b, k=1, rng=rng).obs))
    if kind == "pairs":
        t = ds.sample_transitions(b, k=settings.temporal_offset, rng=rng)
        return SSLBatch(put(t.obs), positive=put(t.next_obs))
    if kind == "sequences":
        s = ds.sample_sequences(b, settings.sequence_length, rng=rng)
        return SSLBatch(put(s.obs), actions=put(s.actions))
    raise ValueError(f"unknown batch_kind {kind!r}")


class Pretrainer:
    """Train ``objective`` on ``dataset``; checkpoints go to ``run_dir/checkpoints``."""

    def __init__(self, objective: SSLObjective, dataset: EpisodeDataset, settings: PretrainSettings,
                 run_dir: str | Path, device: torch.device, encoder_meta: dict[str, Any] | None = None):
        self.objective = objective.to(device)
        self.dataset = dataset
        self.settings = settings
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.device = device
        self.encoder_meta = encoder_meta or {}
        params = [p for p in objective.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
        self.rng = np.random.default_rng(settings.seed)
        torch.manual_seed(settings.seed)
        self.step = 0

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> Path:
        from safetensors.torch import save as st_save

        from worldssl.encoders import save as save_encoder

        meta = {**self.encoder_meta, "step": self.step}
        save_encoder(self.objective.encoder, self.ckpt_dir / "encoder", meta=meta)
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in self.objective.state_dict().items()}
        with atomic_open(self.ckpt_dir / "objective.safetensors", "wb") as f:
            f.write(st_save(tensors))
        state = {"step": self.step, "optimizer": self.optimizer.state_dict(),
                 "numpy_rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
        torch_save(state, self.ckpt_dir / "train_state.pt")
        return self.ckpt_dir

    def load(self, ckpt_dir: str | Path) -> None:
        from safetensors.torch import load_file

        ckpt_dir = Path(ckpt_dir)
        state_path, tensors_path = ckpt_dir / "train_state.pt", ckpt_dir / "objective.safetensors"
        for p in (state_path, tensors_path):
            if not p.is_file():
                raise CheckpointError(f"cannot resume: {p} is missing; point resume= at a pretrain run directory")
        try:
            tensors = load_file(str(tensors_path), device=str(self.device))
            state = torch.load(state_path, map_location="cpu", weights_only=True)
        except Exception as e:  # safetensors / unpickler errors have many types
            raise CheckpointError(f"cannot resume from {ckpt_dir}: corrupt checkpoint ({type(e).__name__}: {e})") from e
        missing, unexpected = self._load_tensors(tensors)
        if missing or unexpected:
            raise CheckpointError(f"checkpoint {ckpt_dir} is for another objective/backbone: missing "
                                  f"{missing[:3]}, unexpected {unexpected[:3]}; resume with the same ssl= and backbone=")
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step = int(state["step"])

    def _load_tensors(self, tensors: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        own = self.objective.state_dict()
        missing = sorted(set(own) - set(tensors))
        unexpected = sorted(set(tensors) - set(own))
        wrong = [k for k in own if k in tensors and own[k].shape != tensors[k].shape]
        if missing or unexpected or wrong:
            return missing + [f"{k} (shape)" for k in wrong], unexpected
        self.objective.load_state_dict(tensors, strict=True)
        return [], []

    # ------------------------------------------------------------------ loop
    def train(self, logger: Logger) -> dict[str, float]:
        from tqdm.auto import tqdm

        s = self.settings
        start, last = time.perf_counter(), {}
        kind = self.objective.batch_kind
        bar = tqdm(total=s.steps, initial=self.step, desc=f"pretrain {type(self.objective).__name__.lower()}",
                   unit="step", disable=not s.progress, mininterval=0.5)
        images, t_log = 0, time.perf_counter()
        while self.step < s.steps:
            self.objective.train()
            batch = sample_batch(self.dataset, kind, s, self.rng, self.device)
            with autocast(self.device, s.amp, cpu_auto=True):  # losses stay float32 (ssl.losses.precision)
                loss, metrics = self.objective.loss(batch)
            if not torch.isfinite(loss):
                raise WorldsslError(f"non-finite loss ({loss.item()}) at step {self.step}; lower lr (now {s.lr}) "
                                    f"or check the data; the last checkpoint in {self.ckpt_dir} is intact")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.objective.update_momentum()
            self.step += 1
            images += batch.obs.shape[0] * (batch.obs.shape[1] if batch.obs.dim() == 5 else 1)
            bar.update(1)
            last = metrics
            if self.step % s.log_every == 0 or self.step == s.steps:
                now = time.perf_counter()
                logger.log({**metrics, "time/images_per_s": images / (now - t_log)}, step=self.step)
                images, t_log = 0, now
                bar.set_postfix(loss=f"{metrics.get('ssl/loss', float('nan')):.4f}", refresh=False)
            if self.step % s.save_every == 0:
                self.save()
            if s.max_minutes is not None and time.perf_counter() - start > 60 * s.max_minutes:
                break
        bar.close()
        self.save()
        return {**{k: float(v) for k, v in last.items() if math.isfinite(float(v))}, "step": self.step,
                "seconds": round(time.perf_counter() - start, 2)}
