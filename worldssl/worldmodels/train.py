"""The world-model training loop: epochs over every window of the dataset, evaluation as it goes, atomic
checkpoints and exact resume.

An epoch visits every ``(episode, t)`` at which a window of ``window`` steps fits, once, in an order drawn
from ``(seed, epoch)`` (C-SWM iterates over its transitions the same way), ``batch_size`` windows per
optimiser step. Because the order of epoch ``e`` depends only on ``(seed, e)`` and the checkpoint records
the position inside the epoch and torch's RNG (the objectives draw their negatives from it), training N
steps in one go and N/2 + N/2 with a restart give identical weights.

A checkpoint, in ``<run>/checkpoints/``, is four files, each written atomically:

* ``model.json``: how to rebuild the model (:func:`worldssl.worldmodels.build.build_world_model` arguments,
  the objective and its options, the dataset it was trained on, the library version);
* ``model.safetensors``: the world model's tensors;
* ``objective.safetensors``: the objective's own tensors (target networks, VAE head), if any;
* ``train_state.pt``: optimiser state, epoch, position, step, RNG states and the evaluation history,
  loadable with ``torch.load(..., weights_only=True)``.

The files are written by :mod:`worldssl.runtime.checkpoint`, as in the pretraining and agent loops.
``max_minutes`` stops the loop after a step, checkpoints and evaluates; SIGTERM (cluster preemption) stops it
after a step, checkpoints and raises :class:`~worldssl.runtime.errors.Interrupted` (no final evaluation: the
resumed run does it). :meth:`WorldModelTrainer.update` is one optimiser step on a batch, for callers that drive
the steps themselves (the benchmarks).

:func:`load_world_model` rebuilds a trained model from that directory alone.
"""

from __future__ import annotations

import dataclasses
import json
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
    module_bytes,
    restore_train_rng,
    rng_state,
    save_module,
    save_train_state,
)
from worldssl.runtime.device import autocast, compile_modules
from worldssl.runtime.errors import CheckpointError, ConfigError, WorldsslError
from worldssl.runtime.io import write_bytes, write_json
from worldssl.runtime.logger import Logger
from worldssl.runtime.settings import (
    Settings,
    amp_mode,
    boolean,
    integer,
    list_of,
    non_negative,
    non_negative_int,
    one_of,
    optional,
    positive,
    positive_int,
    setting,
)
from worldssl.worldmodels.base import TransitionObjective, WorldModel, WorldModelBatch

MODEL_JSON = "model.json"


@dataclass
class WorldModelSettings(Settings):
    """Everything the loop needs; each field's constraint and meaning, checked by ``check()`` and by
    :func:`~worldssl.runtime.settings.settings_from` (the ``worldmodel`` verb's keys of the same names)."""

    epochs: int = setting(100, positive_int, "passes over the train windows")
    batch_size: int = setting(1024, positive_int, "windows per optimiser step")
    lr: float = setting(5e-4, positive, "Adam learning rate")
    weight_decay: float = setting(0.0, non_negative, "Adam weight decay")
    window: int | None = setting(None, optional(positive_int),
                                 "steps per training window (>= the objective's horizon); null: the horizon")
    steps_per_epoch: int | None = setting(None, optional(positive_int), "null: one full pass over the windows")
    eval_every: int = setting(1, non_negative_int, "evaluate every N epochs (0: only at the end)")
    eval_steps: tuple[int, ...] = setting((1, 5, 10), list_of(positive_int), "prediction steps of the ranking")
    eval_batch_size: int = setting(1000, positive_int, "frames per evaluation batch")
    log_every: int = setting(20, positive_int, "log metrics every N optimiser steps")
    save_every: int = setting(200, positive_int, "also checkpoint every N optimiser steps inside an epoch")
    seed: int = setting(0, integer, "seeds the epoch order and torch")
    amp: bool | str = setting("auto", amp_mode, "bf16 autocast on CUDA, and on CPUs with AMX")
    compile: bool | str = setting("auto", amp_mode, "torch.compile the encoder and transition: auto on CUDA only")
    grad_clip: float | None = setting(None, optional(positive), "clip the gradient norm; null: no clipping")
    max_minutes: float | None = setting(None, optional(positive), "training-time budget; stops and checkpoints")
    final_model: str = setting("best_loss", one_of("best_loss", "last"),
                               "what the final evaluation ranks: the lowest-loss epoch (C-SWM's choice) or the last")
    progress: bool = setting(True, boolean, "show a progress bar")


def _put(x: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(device, non_blocking=True)


def window_batch(ds: EpisodeDataset, episode: np.ndarray, t: np.ndarray, length: int,
                 device: torch.device) -> WorldModelBatch:
    """Windows at ``(episode, t)`` as a :class:`WorldModelBatch` on ``device``; frames stay uint8."""
    s = ds.windows(episode, t, length)
    actions = s.actions
    actions = actions.astype(np.int64) if np.issubdtype(actions.dtype, np.integer) else actions.astype(np.float32)
    return WorldModelBatch(_put(s.obs, device), _put(actions, device), _put(s.rewards.astype(np.float32), device))


class WorldModelTrainer:
    """Train ``model`` with ``objective`` on ``train``; evaluate C-SWM's ranking on ``eval_set``.

    ``spec`` is what :func:`load_world_model` needs to rebuild the model (written to ``model.json``).
    ``evaluators`` are extra ``fn(model) -> {name: float}`` run with every evaluation.
    """

    def __init__(self, model: WorldModel, objective: TransitionObjective, train: EpisodeDataset,
                 settings: WorldModelSettings, run_dir: str | Path, device: torch.device,
                 eval_set: EpisodeDataset | None = None, spec: dict[str, Any] | None = None):
        settings.check()
        horizon = int(getattr(objective, "horizon", 1))
        if settings.window is None:
            settings = dataclasses.replace(settings, window=horizon)
        if settings.window < horizon:
            raise ConfigError(f"window={settings.window} is shorter than the objective's horizon {horizon}; "
                              f"set window >= {horizon}")
        self.model, self.objective = model.to(device), objective.to(device)
        self.compiled = compile_modules([model.encoder, model.transition], settings.compile, device)
        self.train_set, self.eval_set = train, eval_set
        self.settings, self.device, self.spec = settings, device, dict(spec or {})
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.starts = train.window_starts(settings.window)
        if len(self.starts[0]) == 0:
            raise ConfigError(f"no episode in {train.root} has {settings.window} steps; lower window")
        params = [p for p in [*model.parameters(), *objective.parameters()] if p.requires_grad]
        # fused: one kernel over all parameters; on 1 CPU thread 5.2 ms a step against 19.2 (for-loop, the CPU
        # default) and 17.7 (foreach) for the Shapes model's 1.35 M parameters (torch 2.14.1)
        self.optimizer = torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay, fused=True)
        self.epoch, self.position, self.step = 0, 0, 0
        self.history: list[dict[str, float]] = []
        # mean training loss of the epoch so far, and the best finished epoch (weights in checkpoints/best/)
        self.loss_sum, self.loss_count = 0.0, 0
        self.best_loss, self.best_epoch = math.inf, -1
        self.evaluators: list[Any] = []

    # ------------------------------------------------------------------ sizes
    @property
    def steps_per_epoch(self) -> int:
        full = math.ceil(len(self.starts[0]) / self.settings.batch_size)
        return min(full, self.settings.steps_per_epoch or full)

    def epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.settings.seed, epoch]).permutation(len(self.starts[0]))

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> Path:
        import worldssl

        write_json(self.ckpt_dir / MODEL_JSON, {**self.spec, "worldssl_version": worldssl.__version__})
        save_module(self.model, self.ckpt_dir / "model.safetensors")
        save_module(self.objective, self.ckpt_dir / "objective.safetensors")
        save_train_state(self.ckpt_dir, {
            "epoch": self.epoch, "position": self.position, "step": self.step,
            "optimizer": self.optimizer.state_dict(), "rng": rng_state(), "history": json.dumps(self.history),
            "loss_sum": self.loss_sum, "loss_count": self.loss_count, "best_loss": self.best_loss,
            "best_epoch": self.best_epoch})
        return self.ckpt_dir

    def load(self, ckpt_dir: str | Path) -> None:
        ckpt_dir = Path(ckpt_dir)
        state = load_train_state(ckpt_dir, "worldmodel")
        load_tensors(self.model, ckpt_dir / "model.safetensors", self.device, "world model")
        load_tensors(self.objective, ckpt_dir / "objective.safetensors", self.device, "objective")
        load_optimizer(self.optimizer, state["optimizer"], ckpt_dir)
        restore_train_rng(state)
        self.epoch, self.position, self.step = int(state["epoch"]), int(state["position"]), int(state["step"])
        self.history = json.loads(state["history"])
        self.loss_sum, self.loss_count = float(state["loss_sum"]), int(state["loss_count"])
        self.best_loss, self.best_epoch = float(state["best_loss"]), int(state["best_epoch"])

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, model: WorldModel | None = None) -> dict[str, float]:
        """Ranking on the eval set (plus any ``evaluators``), keyed ``eval/hits@1/k``, ``eval/mrr/k``, ...;
        of ``model`` (default: the model being trained)."""
        from worldssl.eval.ranking import evaluate_ranking

        model = self.model if model is None else model
        out: dict[str, float] = {}
        if self.eval_set is not None:
            metrics = evaluate_ranking(model, self.eval_set, steps=self.settings.eval_steps,
                                       batch_size=self.settings.eval_batch_size, device=self.device)
            out.update({f"eval/{k}": v for k, v in metrics.items()})
        for fn in self.evaluators:
            out.update({f"eval/{k}": v for k, v in fn(model).items()})
        return out

    # ------------------------------------------------------------------ loop
    def train(self, logger: Logger | None = None) -> dict[str, Any]:
        """Train to ``epochs`` (or ``max_minutes``); returns the last losses and the last evaluation."""
        from tqdm.auto import tqdm

        s = self.settings
        per_epoch = self.steps_per_epoch
        bar = tqdm(total=s.epochs * per_epoch, initial=self.epoch * per_epoch + self.position,
                   desc=f"worldmodel {type(self.objective).__name__}", unit="step", disable=not s.progress,
                   mininterval=0.5)
        last: dict[str, float] = {}
        seen, t_log = 0, time.perf_counter()
        with StopWhen(s.max_minutes) as stop:
            stopped = False
            while self.epoch < s.epochs and not stopped:
                order = self.epoch_order(self.epoch)
                while self.position < per_epoch:
                    rows = order[self.position * s.batch_size:(self.position + 1) * s.batch_size]
                    last = self.update(self.batch(rows))
                    self.loss_sum += last["wm/loss"]
                    self.loss_count += 1
                    self.position += 1
                    seen += len(rows)
                    bar.update(1)
                    if self.step % s.log_every == 0:
                        now = time.perf_counter()
                        metrics = {**last, "time/transitions_per_s": seen / (now - t_log), "epoch": self.epoch}
                        if logger is not None:
                            logger.log(metrics, step=self.step)
                        seen, t_log = 0, now
                        bar.set_postfix(loss=f"{last.get('wm/loss', float('nan')):.4f}", refresh=False)
                    if self.step % s.save_every == 0:
                        self.save()
                    if stop.reason:  # after the step: a run always makes progress
                        stopped = True
                        break
                if self.position >= per_epoch:
                    self.epoch, self.position = self.epoch + 1, 0
                    mean = self._end_epoch(logger)
                    ranking = {}
                    if s.eval_every and self.epoch % s.eval_every == 0 and self.epoch < s.epochs:
                        ranking = self._evaluate_and_log(logger)
                    if mean is not None:
                        bar.write(epoch_line(self.epoch, mean, self.best_epoch == self.epoch, ranking))
                    self.save()
            bar.close()
            self.save()
            stop.raise_if_signalled(f"epoch {self.epoch}, step {self.step}", self.run_dir)
        selected = self.selected_model()
        # the epoch whose weights the final evaluation ranks; live weights stopped mid-epoch count as a fraction
        ranked = self.best_epoch if selected is not self.model else self.epoch + self.position / per_epoch
        final = self._evaluate_and_log(logger, selected, final_epoch=ranked)
        return {**{k: float(v) for k, v in last.items() if math.isfinite(float(v))}, **final,
                "epoch": self.epoch, "step": self.step, "seconds": round(stop.deadline.elapsed, 2),
                "final_model": s.final_model, "selected_epoch": self.best_epoch if selected is not self.model
                else self.epoch, "best_loss": self.best_loss if math.isfinite(self.best_loss) else None}

    def _end_epoch(self, logger: Logger | None) -> float | None:
        """Record the finished epoch's mean loss (returned); keep its weights in ``checkpoints/best/`` if it is
        the lowest."""
        if not self.loss_count:
            return None
        mean = self.loss_sum / self.loss_count
        self.loss_sum, self.loss_count = 0.0, 0
        if logger is not None:
            logger.log({"train/epoch_loss": mean, "train/epoch": self.epoch}, step=self.step)
        if mean < self.best_loss:
            self.best_loss, self.best_epoch = mean, self.epoch
            write_bytes(self.ckpt_dir / "best" / "model.safetensors", module_bytes(self.model))
            write_json(self.ckpt_dir / "best" / MODEL_JSON, {**self.spec, "epoch": self.epoch, "epoch_loss": mean})
        return mean

    def selected_model(self) -> WorldModel:
        """The model the final evaluation ranks: the lowest-loss epoch's weights (``final_model=best_loss``,
        as C-SWM's training script keeps them) or the last ones."""
        best = self.ckpt_dir / "best" / "model.safetensors"
        # the live weights are the best epoch's only if no step was taken since that epoch ended (a run stopped
        # by max_minutes mid-epoch has moved on from them)
        unchanged = self.best_epoch == self.epoch and self.position == 0
        if self.settings.final_model == "last" or self.best_epoch < 0 or unchanged or not best.is_file():
            return self.model
        import copy

        model = copy.deepcopy(self.model)
        load_tensors(model, best, self.device, "world model")
        return model

    def batch(self, rows: np.ndarray) -> WorldModelBatch:
        """The training windows at ``rows`` (indices into the window starts, e.g. a slice of
        :meth:`epoch_order`), on the trainer's device."""
        episode, t = self.starts[0][rows], self.starts[1][rows]
        return window_batch(self.train_set, episode, t, self.settings.window, self.device)

    def update(self, batch: WorldModelBatch) -> dict[str, float]:
        """One optimiser step of the objective on ``batch`` (then its momentum update); counts the step and
        returns the objective's metrics (``wm/loss``, ...)."""
        s = self.settings
        self.model.train()
        self.objective.train()
        with autocast(self.device, s.amp, cpu_auto=True):
            try:
                loss, metrics = self.objective.loss(self.model, batch)
            except FloatingPointError as e:
                raise WorldsslError(f"{e} at step {self.step}; lower lr (now {s.lr}) or check the data; the last "
                                    f"checkpoint in {self.ckpt_dir} is intact") from e
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if s.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]], s.grad_clip)
        self.optimizer.step()
        self.objective.update_momentum(self.model)
        self.step += 1
        return metrics

    def _evaluate_and_log(self, logger: Logger | None, model: WorldModel | None = None,
                          final_epoch: float | None = None) -> dict[str, float]:
        """Evaluate ``model`` (default: the live one) and log it: as ``eval/...`` for the epoch just finished, or,
        given ``final_epoch`` (the epoch whose weights ``model`` holds), as ``final/...`` with it: the final
        evaluation may rank another epoch's weights and so must not be read as this step's."""
        metrics = self.evaluate(model)
        if not metrics:
            return metrics
        self.history.append({"epoch": self.epoch, "step": self.step, **metrics})
        if logger is not None:
            if final_epoch is not None:
                logger.log({"final/epoch": final_epoch,
                            **{"final/" + k.split("/", 1)[1]: v for k, v in metrics.items()}}, step=self.step)
            else:
                logger.log(metrics, step=self.step)
        return metrics


def epoch_line(epoch: int, loss: float, lowest: bool, ranking: dict[str, float]) -> str:
    """``epoch 12: mean loss 0.0163 (lowest so far); Hits@1 99.6 / 93.8 / 77.8% at 1 / 5 / 10 steps``."""
    line = f"epoch {epoch}: mean loss {loss:.4g}" + (" (lowest so far)" if lowest else "")
    keys = sorted((k for k in ranking if k.startswith("eval/hits@1/")), key=lambda k: int(k.rsplit("/", 1)[1]))
    if keys:
        horizons = [k.rsplit("/", 1)[1] for k in keys]
        hits = " / ".join(f"{ranking[k]:.1f}" for k in keys)
        line += f"; Hits@1 {hits}% at {' / '.join(horizons)} step{'' if horizons == ['1'] else 's'}"
    return line


def load_tensors(module: torch.nn.Module, path: Path, device: torch.device | str, what: str) -> None:
    """:func:`worldssl.runtime.checkpoint.load_module` with the world-model advice (kept for importers)."""
    load_module(module, path, device, what=what, fix="use the encoder/transition/objective it was trained with")


def build_from_spec(spec: dict[str, Any]) -> tuple[WorldModel, TransitionObjective]:
    """Model and objective from a ``model.json`` spec (see :class:`WorldModelTrainer`)."""
    from worldssl.worldmodels.build import build_world_model
    from worldssl.worldmodels.objectives import build_objective

    objective = build_objective(spec["objective"], **spec.get("objective_kwargs", {}))
    model = build_world_model(tuple(spec["obs_shape"]), spec["action_space"], spec["encoder"], spec["transition"],
                              latent=spec.get("latent"), objective_needs_decoder=objective.needs_decoder,
                              reward=bool(spec.get("reward", False)))
    objective.attach(model, tuple(model.encoder.out_shape))
    return model, objective


def load_world_model(path: str | Path, device: str | torch.device = "cpu",
                     with_objective: bool = False) -> WorldModel | tuple[WorldModel, TransitionObjective]:
    """Rebuild a trained world model from a run directory or its ``checkpoints/`` (no code is executed)."""
    path = Path(path)
    ckpt = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    meta = ckpt / MODEL_JSON
    if not meta.is_file():
        raise CheckpointError(f"{path} has no {MODEL_JSON}; point at a `worldssl worldmodel` run directory")
    try:
        spec = json.loads(meta.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt {meta}: {e}; restore it or re-train") from e
    model, objective = build_from_spec(spec)
    load_tensors(model, ckpt / "model.safetensors", device, "world model")
    model.to(device).eval()
    if with_objective:
        load_tensors(objective, ckpt / "objective.safetensors", device, "objective")
        return model, objective.to(device)
    return model
