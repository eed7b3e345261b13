"""The pretraining loop: samples what the objective asks for, steps it, logs, checkpoints, resumes exactly.

The loop owns all I/O (the objective only returns a loss and metrics). A checkpoint is three files, each
written atomically, in ``<run>/checkpoints/``:

* ``encoder/`` (``encoder.safetensors`` + ``encoder.json``): what downstream users load;
* ``objective.safetensors``: every tensor of the objective (heads, target networks, queues);
* ``train_state.pt``: optimiser state, step, and the RNG states (:func:`~worldssl.runtime.checkpoint.rng_state`,
  the data sampler's generator included), loadable with ``torch.load(..., weights_only=True)``.

Resuming restores all three, so N steps in one go and N/2 + N/2 with a restart give identical weights. The
files are written by :mod:`worldssl.runtime.checkpoint`, as in the world-model and agent loops; SIGTERM (cluster
preemption) stops the loop after the current step, writes a checkpoint and raises
:class:`~worldssl.runtime.errors.Interrupted`.
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
from worldssl.runtime.checkpoint import (
    StopWhen,
    load_module,
    load_optimizer,
    load_train_state,
    restore_train_rng,
    rng_state,
    save_module,
    save_train_state,
)
from worldssl.runtime.device import autocast
from worldssl.runtime.errors import WorldsslError
from worldssl.runtime.logger import Logger
from worldssl.runtime.settings import (
    Settings,
    amp_mode,
    boolean,
    integer,
    non_negative,
    optional,
    positive,
    positive_int,
    setting,
)
from worldssl.ssl.base import SSLObjective
from worldssl.ssl.batch import SSLBatch


@dataclass
class PretrainSettings(Settings):
    """Everything the loop needs; each field's constraint and meaning, checked by ``check()`` and by
    :func:`~worldssl.runtime.settings.settings_from` (the ``pretrain`` verb's keys of the same names)."""

    steps: int = setting(2000, positive_int, "optimiser steps")
    batch_size: int = setting(128, positive_int, "samples per step")
    lr: float = setting(1e-3, positive, "AdamW learning rate")
    weight_decay: float = setting(0.0, non_negative, "AdamW weight decay")
    temporal_offset: int = setting(1, positive_int, "k for temporal positives: frame t vs t+k")
    sequence_length: int = setting(8, positive_int, "window length for sequence objectives (CPC)")
    log_every: int = setting(50, positive_int, "log metrics every N steps")
    save_every: int = setting(500, positive_int, "checkpoint every N steps (and at the end)")
    seed: int = setting(0, integer, "seeds the data order and torch")
    amp: bool | str = setting("auto", amp_mode, "bf16 autocast on CUDA and on CPUs with bf16 matrix units (AMX)")
    max_minutes: float | None = setting(None, optional(positive), "wall-clock budget; stops and checkpoints")
    progress: bool = setting(True, boolean, "show a progress bar")


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
        settings.check()
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
        from worldssl.encoders import save as save_encoder

        meta = {**self.encoder_meta, "step": self.step}
        save_encoder(self.objective.encoder, self.ckpt_dir / "encoder", meta=meta)
        save_module(self.objective, self.ckpt_dir / "objective.safetensors")
        save_train_state(self.ckpt_dir, {"step": self.step, "optimizer": self.optimizer.state_dict(),
                                         "rng": rng_state({"data": self.rng})})
        return self.ckpt_dir

    def load(self, ckpt_dir: str | Path) -> None:
        ckpt_dir = Path(ckpt_dir)
        state = load_train_state(ckpt_dir, "pretrain")
        load_module(self.objective, ckpt_dir / "objective.safetensors", self.device, what="objective/backbone",
                    fix="resume with the same ssl= and backbone=")
        load_optimizer(self.optimizer, state["optimizer"], ckpt_dir)
        restore_train_rng(state, {"data": self.rng})
        self.step = int(state["step"])

    # ------------------------------------------------------------------ loop
    def train(self, logger: Logger) -> dict[str, float]:
        """Train to ``steps``; ``max_minutes`` or SIGTERM stop early, after a checkpoint (SIGTERM then raises
        :class:`~worldssl.runtime.errors.Interrupted`)."""
        from tqdm.auto import tqdm

        s = self.settings
        last: dict[str, float] = {}
        bar = tqdm(total=s.steps, initial=self.step, desc=f"pretrain {type(self.objective).__name__.lower()}",
                   unit="step", disable=not s.progress, mininterval=0.5)
        images, t_log = 0, time.perf_counter()
        with StopWhen(s.max_minutes) as stop:
            while self.step < s.steps:
                batch = sample_batch(self.dataset, self.objective.batch_kind, s, self.rng, self.device)
                last = self.update(batch)
                images += batch.obs.shape[0] * (batch.obs.shape[1] if batch.obs.dim() == 5 else 1)
                bar.update(1)
                if self.step % s.log_every == 0 or self.step == s.steps:
                    now = time.perf_counter()
                    logger.log({**last, "time/images_per_s": images / (now - t_log)}, step=self.step)
                    images, t_log = 0, now
                    bar.set_postfix(loss=f"{last.get('ssl/loss', float('nan')):.4f}", refresh=False)
                if self.step % s.save_every == 0:
                    self.save()
                if stop.reason:
                    break
            bar.close()
            self.save()
            stop.raise_if_signalled(f"step {self.step}", self.run_dir)
        return {**{k: float(v) for k, v in last.items() if math.isfinite(float(v))}, "step": self.step,
                "seconds": round(stop.deadline.elapsed, 2)}

    def update(self, batch: SSLBatch) -> dict[str, float]:
        """One optimiser step (and momentum update) on ``batch``; returns the objective's metrics."""
        s = self.settings
        self.objective.train()
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
        return metrics
