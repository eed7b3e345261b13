"""Stable-Baselines3 with the suite's encoders: a features extractor, a frozen-feature wrapper, and SB3's PPO / SAC
run by ``worldssl train agent=sb3_ppo | sb3_sac`` with the suite's run directory.

**The extractor.** Any SB3 user drops a pretrained encoder into an experiment with one line::

    from agents.sb3 import WorldsslExtractor
    PPO("CnnPolicy", env, policy_kwargs=dict(
        features_extractor_class=WorldsslExtractor,
        features_extractor_kwargs=dict(checkpoint=PATH, freeze=True),
        normalize_images=False))

``checkpoint`` takes what ``worldssl train encoder.checkpoint=`` takes (:func:`agents.encoders.load_encoder`): a
``worldssl pretrain`` encoder, a ``worldssl worldmodel`` run (its encoder; slot latents flattened), or a
published MoCo / MAE / R3M file; ``None`` builds the DrQ conv encoder at its random initialisation (frozen: the
random-features baseline; trainable: a scratch encoder trained by the RL loss).

SB3 casts observations to float before any extractor sees them: ``normalize_images=False`` hands it pixel
values in ``[0, 255]``, ``normalize_images=True`` (SB3's default) ``pixel / 255`` in ``[0, 1]``. The extractor
cannot see which flag its policy has, so it reads the scale from the values: a batch with a value above 1 is
``[0, 255]``, a batch with a non-integer value is ``[0, 1]``; the first batch that tells them apart fixes the
scale for the extractor's life, and a later batch of the other scale is a one-line error. (The only batches
that do not tell them apart hold nothing but 0s and 1s: an all-black frame means the same on both scales.)
Either flag thus gives the same features.

**Frozen features.** SB3's documentation advises encoding observations once in a wrapper when the encoder is
frozen, rather than in the policy: :class:`FrozenFeatures` turns pixel observations into the frozen encoder's
features, so PPO's epochs over a rollout and SAC's replay see float vectors (``worldssl bench sb3`` measures the
gain against the in-policy frozen extractor).

**SAC's shared extractor.** With ``share_features_extractor=True`` SB3's SAC trains the one extractor from the
actor loss only (the critic's optimizer leaves out every ``features_extractor`` parameter); with SB3's default
``False`` the actor and the critic each train their own copy. CURL and DrQ (``agent=sac``) train the encoder from
the critic. docs/guide.md says what we recommend.

**Run directory and resume** (:class:`SB3Trainer`). The same files as ``agent=sac`` (``metrics.csv``, ``tb/``,
``summary.json``, ``curves.png``, ``videos/``, ``checkpoints/``) except ``replay/``. Checkpoints never go through
SB3's ``save`` / ``load`` / ``load_replay_buffer``, which unpickle: the policy's weights are safetensors
(``policy.safetensors``), optimizer states, counters and RNG states are in ``train_state.pt`` (loaded with
``weights_only=True``), and SAC's replay buffer is its plain arrays in ``replay.npz`` (read with
``allow_pickle=False``). A checkpoint is taken where SB3 starts a rollout: every update so far is done and
every transition stored. A resumed run starts fresh episodes, so it continues the run rather than replaying it
bit for bit; for PPO, env steps of a rollout cut short by a stop are counted but not trained on.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter
from stable_baselines3.common.logger import Logger as SB3Logger
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from agents.encoders import Features, build_features
from worldssl.runtime.checkpoint import (
    StopWhen,
    load_module,
    load_optimizer,
    load_train_state,
    restore_rng,
    rng_state,
    save_module,
    save_train_state,
)
from worldssl.runtime.errors import CheckpointError, ConfigError
from worldssl.runtime.io import atomic_open, write_json
from worldssl.runtime.logger import Logger
from worldssl.runtime.settings import (
    Settings,
    between,
    boolean,
    non_negative,
    one_of,
    positive,
    positive_int,
    setting,
)

#: ``agent=`` name -> SB3 algorithm
SB3_ALGOS = {"sb3_ppo": "PPO", "sb3_sac": "SAC"}
#: ``encoder.mode`` values SB3 can run (CURL's and ATC's auxiliary losses need the suite's own SAC)
SB3_MODES = ("scratch", "frozen", "finetune")
POLICY_WEIGHTS = "policy.safetensors"
FEATURE_WEIGHTS = "features.safetensors"
REPLAY_FILE = "replay.npz"


# ------------------------------------------------------------------------------------------------ extractor
def check_pixel_space(space: gym.Space, who: str = "WorldsslExtractor") -> tuple[int, int, int]:
    """The ``(C, H, W)`` of a uint8 pixel observation space; anything else is a one-line :class:`ConfigError`."""
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 3:
        raise ConfigError(f"{who} needs image observations (a Box of shape (C, H, W)), got {space}; use it on a "
                          f"pixel env, or SB3's FlattenExtractor for vector observations")
    if space.dtype != np.uint8:
        raise ConfigError(f"{who} needs uint8 pixel observations in [0, 255], but the observation space is "
                          f"{space.dtype} {space.shape}; remove the wrapper that turns frames into floats and let "
                          f"the extractor normalise (it takes uint8 frames, or SB3's normalize_images=True floats)")
    return tuple(int(s) for s in space.shape)  # type: ignore[return-value]


def encoder_features(obs_shape: tuple[int, int, int], checkpoint: str | Path | None = None,
                     conv: dict[str, Any] | None = None, freeze: bool = True) -> Features:
    """The suite encoder at ``checkpoint`` (or a random-init DrQ conv encoder, full output) for ``obs_shape``.

    An encoder trained on other observations is a one-line error naming the shapes and the fix."""
    if checkpoint in (None, ""):
        from worldssl.encoders import ConvEncoder

        return Features(ConvEncoder(obs_shape, **(conv or {})), obs_shape, source="random" if freeze else "scratch")
    return build_features("frozen" if freeze else "finetune", obs_shape, str(checkpoint))


class WorldsslExtractor(BaseFeaturesExtractor):
    """SB3 features extractor over a suite encoder: ``(B, C, H, W)`` pixels -> ``(B, D)`` features.

    Args:
        observation_space: uint8 ``(C, H, W)`` (SB3 passes it).
        checkpoint: what ``worldssl train encoder.checkpoint=`` takes; ``None``: the DrQ conv encoder at random init.
        freeze: keep the encoder's weights (and batch-norm statistics) fixed; ``False`` trains it by the RL loss.
        conv: options of the random-init conv encoder (``checkpoint=None`` only), e.g. ``{"feature_dim": 50}``.
    """

    def __init__(self, observation_space: gym.Space, checkpoint: str | Path | None = None, freeze: bool = True,
                 conv: dict[str, Any] | None = None):
        obs_shape = check_pixel_space(observation_space)
        features = encoder_features(obs_shape, checkpoint, conv, freeze)
        super().__init__(observation_space, features.repr_dim)
        self.encoder = features
        self.frozen = bool(freeze)
        self.source = features.source
        self.scale: str | None = None  # "pixels" ([0, 255]) or "unit" ([0, 1]), fixed by the first telling batch
        if self.frozen:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    def train(self, mode: bool = True) -> WorldsslExtractor:
        super().train(mode)
        if self.frozen:  # SB3 switches the policy to train mode for updates: a frozen encoder stays in eval
            self.encoder.eval()
        return self

    def to_unit(self, obs: torch.Tensor) -> torch.Tensor:
        """SB3's float observations (either scale) or uint8 -> what the encoder contract takes."""
        if not obs.is_floating_point():
            return obs
        above_one = bool((obs > 1.0).any())
        fractional = bool((obs != obs.round()).any())
        seen = "pixels" if above_one else "unit" if fractional else None
        if seen is not None:
            if self.scale is None:
                self.scale = seen
            elif seen != self.scale:
                raise ValueError(f"WorldsslExtractor got {'[0, 255]' if seen == 'pixels' else '[0, 1]'} float "
                                 f"observations after {'[0, 255]' if self.scale == 'pixels' else '[0, 1]'} ones; "
                                 f"feed it from one policy with one normalize_images setting")
        return obs / 255.0 if (self.scale or "pixels") == "pixels" else obs

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        x = self.to_unit(observations)
        if self.frozen:
            with torch.no_grad():
                return self.encoder(x)
        return self.encoder(x)


class FrozenFeatures(gym.ObservationWrapper):
    """Pixel observations -> a frozen encoder's features (float32 ``(D,)``), each frame encoded once.

    ``features`` is a :class:`agents.encoders.Features` (or give ``checkpoint=``, as for
    :class:`WorldsslExtractor`); ``pixels`` holds the last raw observation, for videos.
    """

    def __init__(self, env: gym.Env, checkpoint: str | Path | None = None, features: Features | None = None,
                 device: str | torch.device = "cpu"):
        super().__init__(env)
        obs_shape = check_pixel_space(env.observation_space, "FrozenFeatures")
        if features is None:
            features = encoder_features(obs_shape, checkpoint, freeze=True)
        elif tuple(features.obs_shape) != obs_shape:
            raise ConfigError(f"FrozenFeatures: the encoder expects observations {tuple(features.obs_shape)} but the "
                              f"env gives {obs_shape}; use an encoder trained at the env's image size and frame stack")
        self.features = features.requires_grad_(False).eval().to(device)
        self.device = torch.device(device)
        self.observation_space = features_space(features)
        self.pixels: np.ndarray | None = None

    def observation(self, observation: np.ndarray) -> np.ndarray:
        self.pixels = observation
        return encode_frozen(self.features, observation, self.device)


def features_space(features: Features) -> gym.spaces.Box:
    """The observation space of :class:`FrozenFeatures` over ``features``."""
    return gym.spaces.Box(-np.inf, np.inf, (features.repr_dim,), np.float32)


def encode_frozen(features: Features, observation: np.ndarray, device: str | torch.device = "cpu") -> np.ndarray:
    """One pixel observation ``(C, H, W)`` -> the frozen encoder's features, float32 ``(D,)``."""
    with torch.no_grad():
        x = torch.as_tensor(np.ascontiguousarray(observation), device=device).unsqueeze(0)
        return features(x)[0].float().cpu().numpy()


# ------------------------------------------------------------------------------------------------ settings
@dataclass
class SB3PPOConfig(Settings):
    """``agent=sb3_ppo``: SB3's PPO; the loop keys ``batch_size`` (minibatch) and ``discount`` apply too."""

    lr: float = setting(3e-4, positive, "Adam learning rate")
    n_steps: int = setting(512, positive_int, "env steps per rollout (one env)")
    n_epochs: int = setting(4, positive_int, "passes over each rollout")
    gae_lambda: float = setting(0.95, between(0.0, 1.0 + 1e-9), "GAE lambda")
    clip_range: float = setting(0.2, positive, "PPO clip range")
    ent_coef: float = setting(0.01, non_negative, "entropy bonus")
    vf_coef: float = setting(0.5, non_negative, "value loss weight")
    max_grad_norm: float = setting(0.5, positive, "gradient clipping")
    hidden_dim: int = setting(64, positive_int, "width of the two policy and value MLP layers on the features")
    extractor: str = setting("worldssl", one_of("worldssl", "nature"),
                             "worldssl: WorldsslExtractor; nature: SB3's own NatureCNN (encoder.mode=scratch)")
    precompute: bool = setting(True, boolean, "frozen: encode each frame once in FrozenFeatures (SB3's advice)")


@dataclass
class SB3SACConfig(Settings):
    """``agent=sb3_sac``: SB3's SAC; loop keys ``batch_size``, ``discount``, ``seed_frames`` (learning starts),
    ``replay_capacity`` and ``update_every_steps`` (train frequency) apply too."""

    lr: float = setting(3e-4, positive, "Adam learning rate of actor, critic and temperature")
    tau: float = setting(0.005, between(0.0, 1.0 + 1e-9), "target critic Polyak rate")
    init_temperature: float = setting(0.1, positive, "initial entropy coefficient (learned)")
    gradient_steps: int = setting(1, positive_int, "updates per train step")
    hidden_dim: int = setting(256, positive_int, "width of the two actor and critic MLP layers")
    share_features_extractor: bool = setting(False, boolean,
                                             "one extractor for actor and critic (SB3 then trains it by the actor "
                                             "loss only); false: SB3's default, one per network")
    extractor: str = setting("worldssl", one_of("worldssl", "nature"),
                             "worldssl: WorldsslExtractor; nature: SB3's own NatureCNN (encoder.mode=scratch)")
    precompute: bool = setting(True, boolean, "frozen: encode each frame once in FrozenFeatures (SB3's advice)")


CONFIGS: dict[str, type[Settings]] = {"sb3_ppo": SB3PPOConfig, "sb3_sac": SB3SACConfig}


def check_spec(spec: dict[str, Any]) -> None:
    """One-line errors for what SB3 cannot run (before anything is built)."""
    name, mode = spec["agent"], spec["mode"]
    cfg = spec.get("config", {})
    if mode not in SB3_MODES:
        raise ConfigError(f"agent={name} runs encoder.mode={' | '.join(SB3_MODES)}, not {mode!r}: SB3 has no "
                          f"auxiliary encoder loss; use agent=sac for encoder.mode={mode}")
    if mode == "finetune" and not spec.get("encoder_checkpoint"):
        raise ConfigError("encoder.mode=finetune needs encoder.checkpoint=PATH; for a random-init encoder trained by "
                          "the RL loss use encoder.mode=scratch")
    if cfg.get("extractor", "worldssl") == "nature" and mode != "scratch":
        raise ConfigError(f"agent.extractor=nature is SB3's own NatureCNN trained from scratch; with "
                          f"encoder.mode={mode} use agent.extractor=worldssl")


# ------------------------------------------------------------------------------------------------ building
def precomputes(spec: dict[str, Any]) -> bool:
    """Whether ``spec``'s frozen features are encoded once in a :class:`FrozenFeatures` wrapper."""
    return spec["mode"] == "frozen" and bool(spec.get("config", {}).get("precompute", True))


def frozen_features(spec: dict[str, Any], obs_shape: tuple[int, ...]) -> Features | None:
    """The frozen encoder a :class:`FrozenFeatures` wrapper applies for ``spec`` (``None`` unless
    :func:`precomputes`); a run's trained copy is in ``checkpoints/features.safetensors``."""
    if not precomputes(spec):
        return None
    return encoder_features(tuple(obs_shape), spec.get("encoder_checkpoint"), spec.get("conv") or None, freeze=True)


def build_model(spec: dict[str, Any], env: gym.Env, seed: int, loop: Any, device: str | torch.device = "cpu") -> Any:
    """SB3's PPO or SAC for ``spec`` on ``env`` (pixels, or :class:`FrozenFeatures` when :func:`precomputes`)."""
    from stable_baselines3 import PPO, SAC

    name, cfg = spec["agent"], dict(spec.get("config", {}))
    if name == "sb3_sac" and not isinstance(env.action_space, gym.spaces.Box):
        raise ConfigError(f"agent=sb3_sac needs a continuous (Box) action space, but the env has {env.action_space}; "
                          f"use agent=sb3_ppo for discrete actions (the maze: or env.kwargs.action_type=continuous)")
    policy_kwargs: dict[str, Any] = {}
    if isinstance(env.observation_space, gym.spaces.Box) and len(env.observation_space.shape) == 1:
        policy = "MlpPolicy"  # frozen features from FrozenFeatures
    else:
        policy = "CnnPolicy"
        if cfg.get("extractor", "worldssl") == "worldssl":
            policy_kwargs.update(features_extractor_class=WorldsslExtractor, normalize_images=False,
                                 features_extractor_kwargs=dict(checkpoint=spec.get("encoder_checkpoint"),
                                                                freeze=spec["mode"] == "frozen",
                                                                conv=spec.get("conv") or None))
    hidden = int(cfg.get("hidden_dim", 64 if name == "sb3_ppo" else 256))
    policy_kwargs["net_arch"] = [hidden, hidden]
    common = dict(learning_rate=float(cfg.get("lr", 3e-4)), gamma=float(loop.discount), batch_size=loop.batch_size,
                  seed=int(seed), device=device, verbose=0, policy_kwargs=policy_kwargs)
    if name == "sb3_ppo":
        return PPO(policy, env, n_steps=int(cfg.get("n_steps", 512)), n_epochs=int(cfg.get("n_epochs", 4)),
                   gae_lambda=float(cfg.get("gae_lambda", 0.95)), clip_range=float(cfg.get("clip_range", 0.2)),
                   ent_coef=float(cfg.get("ent_coef", 0.01)), vf_coef=float(cfg.get("vf_coef", 0.5)),
                   max_grad_norm=float(cfg.get("max_grad_norm", 0.5)), **common)
    policy_kwargs["share_features_extractor"] = bool(cfg.get("share_features_extractor", False))
    repeat = int(getattr(env.unwrapped, "action_repeat", 1))
    capacity = loop.replay_capacity or loop.frames
    return SAC(policy, env, buffer_size=max(capacity // repeat, loop.batch_size) + 1,
               learning_starts=loop.seed_frames // repeat, tau=float(cfg.get("tau", 0.005)),
               train_freq=loop.update_every_steps, gradient_steps=int(cfg.get("gradient_steps", 1)),
               ent_coef=f"auto_{float(cfg.get('init_temperature', 0.1))}", **common)


def load_weights(model: Any, features: Features | None, ckpt_dir: str | Path, fix: str) -> None:
    """A checkpoint's policy (and frozen-feature) weights into a freshly built model, from safetensors only."""
    load_module(model.policy, Path(ckpt_dir) / POLICY_WEIGHTS, model.device, "policy", fix)
    if features is not None:
        load_module(features, Path(ckpt_dir) / FEATURE_WEIGHTS, "cpu", "encoder", fix)


def check_action_space(spec: dict[str, Any], space: gym.Space, who: str) -> None:
    """A one-line :class:`ConfigError` unless ``space`` is the kind and size of action ``spec``'s policy outputs
    (``spec["action_space"]``, ``discrete`` or ``box``, is recorded by runs since it was added; SAC is always box)."""
    kind = spec.get("action_space") or ("box" if spec["agent"] == "sb3_sac" else None)
    n = int(spec["action_dim"])
    if isinstance(space, gym.spaces.Discrete):
        fits = kind in (None, "discrete") and spec["agent"] == "sb3_ppo" and int(space.n) == n
    else:
        fits = isinstance(space, gym.spaces.Box) and kind in (None, "box") and int(np.prod(space.shape)) == n
    if not fits:
        outputs = {"discrete": f"one of {n} discrete actions", "box": f"{n} continuous action(s)"}.get(
            kind, f"actions of size {n}")
        raise ConfigError(f"{who} outputs {outputs} but the env's action space is {space}; use the run's env "
                          f"(omit env=)")


class _Spaces(gym.Env):
    """An env that only declares its spaces: enough for SB3 to build a model that will only ``predict``."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space):
        self.observation_space, self.action_space = observation_space, action_space


def load_model(run_dir: str | Path, action_space: gym.Space) -> tuple[Any, Features | None, dict[str, Any]]:
    """``(model, features, spec)``: a ``worldssl train agent=sb3_ppo | sb3_sac`` run's model rebuilt from its
    ``agent.json`` for ``action_space`` and its safetensors weights loaded, as a resume does (nothing is
    unpickled); ``features`` is the frozen encoder its observations go through first, if the run precomputed
    them (:func:`encode_frozen`). Buffers are built at their smallest (acting never fills them), and the
    caller's RNG states are left as they were."""
    from agents.loop import LoopSettings, read_agent_spec

    ckpt, spec = read_agent_spec(run_dir)
    if spec.get("agent") not in SB3_ALGOS:
        raise CheckpointError(f"{run_dir} is an agent={spec.get('agent')} run, not an SB3 one "
                              f"({' or '.join(SB3_ALGOS)})")
    check_spec(spec)
    check_action_space(spec, action_space, f"policy={run_dir}")
    obs_space = gym.spaces.Box(0, 255, tuple(int(s) for s in spec["obs_shape"]), np.uint8)  # as FrameStack gives
    saved = rng_state()  # building draws initial weights, and SB3 seeds every global RNG
    try:
        features = frozen_features(spec, obs_space.shape)
        spaces = _Spaces(obs_space if features is None else features_space(features), action_space)
        acting = {**spec, "config": {**spec.get("config", {}), "n_steps": 2}}  # n_steps sizes PPO's rollout buffer
        model = build_model(acting, spaces, 0, LoopSettings(frames=2, seed_frames=0, batch_size=2), "cpu")
    finally:
        restore_rng(saved)
    load_weights(model, features, ckpt, "use the run's env (omit env=), or re-train")
    model.policy.set_training_mode(False)
    return model, features, spec


def optimizers(model: Any) -> dict[str, torch.optim.Optimizer]:
    """Every optimizer of an SB3 PPO / SAC model, by a stable name."""
    if hasattr(model, "critic"):
        out = {"actor": model.actor.optimizer, "critic": model.critic.optimizer}
        if getattr(model, "ent_coef_optimizer", None) is not None:
            out["ent_coef"] = model.ent_coef_optimizer
        return out
    return {"policy": model.policy.optimizer}


# ------------------------------------------------------------------------------------------------ replay
_REPLAY_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def save_replay(buffer: Any, path: Path) -> None:
    """An SB3 ``ReplayBuffer``'s filled rows as plain arrays (``.npz``, no pickle), written atomically."""
    n = buffer.buffer_size if buffer.full else buffer.pos
    arrays = {k: getattr(buffer, k)[:n] for k in _REPLAY_ARRAYS if getattr(buffer, k, None) is not None}
    arrays["pos"], arrays["full"] = np.asarray(buffer.pos, np.int64), np.asarray(buffer.full, bool)
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


def load_replay(buffer: Any, path: Path) -> None:
    """Undo :func:`save_replay` into a fresh buffer of the same size and spaces (``allow_pickle=False``)."""
    if not path.is_file():
        raise CheckpointError(f"cannot resume: {path} is missing; the run directory is incomplete (start a new run)")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot resume: corrupt {path} ({type(e).__name__}: {e}); start a new run") from e
    for key in _REPLAY_ARRAYS:
        if key not in data:
            continue
        target = getattr(buffer, key)
        n = len(data[key])
        if n > len(target) or data[key].shape[1:] != target.shape[1:]:
            raise CheckpointError(f"cannot resume: {path} holds {key} of shape {data[key].shape}, the buffer "
                                  f"{target.shape}; resume with the configuration the run was started with")
        target[:n] = data[key]
    buffer.pos, buffer.full = int(data["pos"]), bool(data["full"])


# ------------------------------------------------------------------------------------------------ trainer
class _MetricsWriter(KVWriter):
    """SB3's logger output -> the run's :class:`worldssl.runtime.logger.Logger` (numbers only, at env frames)."""

    def __init__(self, trainer: SB3Trainer, logger: Logger):
        self.trainer, self.logger = trainer, logger

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        row = {k: float(v) for k, v in key_values.items()
               if isinstance(v, (int, float, np.integer, np.floating)) and not k.startswith("time/")}
        if row:
            self.logger.log(row, step=self.trainer.frame)

    def close(self) -> None:
        pass


class _Loop(BaseCallback):
    """Evaluation, checkpoints, the budget and the progress bar, at the points SB3 hands over."""

    def __init__(self, trainer: SB3Trainer, logger: Logger, stop: StopWhen, bar: Any, wall0: float):
        super().__init__()
        self.t, self.run_logger, self.stop, self.bar, self.wall0 = trainer, logger, stop, bar, wall0

    def _on_rollout_start(self) -> None:
        t = self.t
        if t.frame >= t.next_save and t.frame > 0:
            t.next_save = (t.frame // t.s.save_every_frames + 1) * t.s.save_every_frames
            t.save_timed(self.wall0, self.stop.deadline)

    def _on_step(self) -> bool:
        t = self.t
        t.bar_update(self.bar)
        for info, done in zip(self.locals.get("infos", []), self.locals.get("dones", []), strict=False):
            if done and "episode" in info:
                t.episode += 1
                self.run_logger.log({"train/episode_return": float(info["episode"]["r"]),
                                 "train/episode_length": float(info["episode"]["l"]),
                                 "train/episode": float(t.episode)}, step=t.frame)
        if t.frame >= t.next_eval:
            t.evaluate_and_log(self.run_logger, self.bar)
        t.stopped = self.stop.reason
        return t.stopped is None


class SB3Trainer:
    """Train an SB3 model into ``run_dir`` with the suite's evaluation, videos, logging and checkpoints.

    ``env`` / ``eval_env`` are the envs the model sees (pixels, or :class:`FrozenFeatures` over them); ``features`` is the frozen
    encoder of a :class:`FrozenFeatures` wrapper, if any (saved beside the policy)."""

    def __init__(self, model: Any, env: gym.Env, eval_env: gym.Env, settings: Any, run_dir: str | Path,
                 spec: dict[str, Any], features: Features | None = None):
        self.model, self.env, self.eval_env, self.s = model, env, eval_env, settings
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.spec = dict(spec)
        self.features = features
        self.action_repeat = int(getattr(env.unwrapped, "action_repeat", 1))
        pixel_env = env.env if isinstance(env, FrozenFeatures) else env
        self.frame_channels = int(pixel_env.observation_space.shape[0]) // int(getattr(pixel_env, "k", 1))
        self.episode = 0
        self.next_save = settings.save_every_frames
        self.next_eval = 0
        self.history: list[dict[str, float]] = []
        self.best_return = -math.inf
        self.wall = 0.0
        self.stopped: str | None = None
        self._bar_frame = 0

    @property
    def frame(self) -> int:
        return int(self.model.num_timesteps) * self.action_repeat

    @property
    def updates(self) -> int:
        return int(getattr(self.model, "_n_updates", 0))

    # ---------------------------------------------------------------------------------------- checkpoints
    def save(self) -> Path:
        import worldssl

        write_json(self.ckpt_dir / "agent.json", {**self.spec, "worldssl_version": worldssl.__version__})
        save_module(self.model.policy, self.ckpt_dir / POLICY_WEIGHTS)
        if self.features is not None:
            save_module(self.features, self.ckpt_dir / FEATURE_WEIGHTS)
        if hasattr(self.model, "replay_buffer") and self.model.replay_buffer is not None:
            save_replay(self.model.replay_buffer, self.ckpt_dir / REPLAY_FILE)
        log_ent = getattr(self.model, "log_ent_coef", None)
        state = {"frame": self.frame, "num_timesteps": int(self.model.num_timesteps), "n_updates": self.updates,
                 "episode": self.episode, "next_save": self.next_save, "next_eval": self.next_eval,
                 "best_return": self.best_return, "wall": self.wall, "history": json.dumps(self.history),
                 "optimizers": {k: o.state_dict() for k, o in optimizers(self.model).items()},
                 "log_ent_coef": log_ent.detach().cpu() if isinstance(log_ent, torch.Tensor) else None,
                 "rng": rng_state()}
        save_train_state(self.ckpt_dir, state)
        return self.ckpt_dir

    def load(self, ckpt_dir: str | Path) -> None:
        """Restore a checkpoint into this trainer's freshly built model (nothing is unpickled)."""
        ckpt_dir = Path(ckpt_dir)
        state = load_train_state(ckpt_dir, "train")
        load_weights(self.model, self.features, ckpt_dir,
                     "resume with the agent, encoder and env the run was started with")
        for name, opt in optimizers(self.model).items():
            load_optimizer(opt, state["optimizers"][name], ckpt_dir)
        if state.get("log_ent_coef") is not None:
            with torch.no_grad():
                self.model.log_ent_coef.copy_(state["log_ent_coef"])
        if hasattr(self.model, "replay_buffer") and self.model.replay_buffer is not None:
            load_replay(self.model.replay_buffer, ckpt_dir / REPLAY_FILE)
        restore_rng(state["rng"])
        self.model.num_timesteps = int(state["num_timesteps"])
        self.model._n_updates = int(state["n_updates"])
        self.episode = int(state["episode"])
        self.next_save, self.next_eval = int(state["next_save"]), int(state["next_eval"])
        self.best_return, self.wall = float(state["best_return"]), float(state["wall"])
        self.history = json.loads(state["history"])
        # fresh episodes from a seed of their own, not the run's first ones again
        from agents.loop import episode_seed

        self.model.env.seed(episode_seed(self.s.seed, self.episode))

    def save_timed(self, wall0: float, deadline: Any) -> None:
        self.wall = wall0 + deadline.elapsed
        self.save()

    # ---------------------------------------------------------------------------------------- evaluation
    def evaluate(self) -> dict[str, float]:
        """:func:`agents.loop.evaluate_policy` with SB3's deterministic action (the maze adds ``eval/success``)."""
        from agents.loop import evaluate_policy

        return evaluate_policy(self.eval_env, lambda obs: self.model.predict(obs, deterministic=True)[0], self.s,
                               self._frame_of, self.run_dir / "videos" / f"eval_{self.frame:08d}.mp4")

    def _frame_of(self, obs: np.ndarray) -> np.ndarray:
        pixels = self.eval_env.pixels if isinstance(self.eval_env, FrozenFeatures) else obs
        return np.ascontiguousarray(pixels[-self.frame_channels:].transpose(1, 2, 0))  # newest frame, HWC

    def evaluate_and_log(self, logger: Logger, bar: Any) -> None:
        metrics = self.evaluate()
        self.next_eval = (self.frame // self.s.eval_every_frames + 1) * self.s.eval_every_frames
        entry = {"frame": self.frame, "return": metrics["eval/return"], "return_std": metrics["eval/return_std"]}
        if "eval/success" in metrics:
            entry["success"] = metrics["eval/success"]
        self.history.append(entry)
        self.best_return = max(self.best_return, metrics["eval/return"])
        logger.log({**metrics, "eval/frame": float(self.frame)}, step=self.frame)
        extra = f", success {metrics['eval/success']:.2f}" if "eval/success" in metrics else ""
        bar.write(f"frame {self.frame}: eval return {metrics['eval/return']:.2f} ± {metrics['eval/return_std']:.2f} "
                  f"over {self.s.eval_episodes} episodes{extra}")

    def bar_update(self, bar: Any) -> None:
        bar.update(self.frame - self._bar_frame)
        self._bar_frame = self.frame

    # ---------------------------------------------------------------------------------------- loop
    def train(self, logger: Logger) -> dict[str, Any]:
        """Train to ``frames`` (or ``max_minutes`` / SIGTERM); returns the summary."""
        from tqdm.auto import tqdm

        s = self.s
        s.check()
        if s.nstep != 1:
            raise ConfigError(f"agent={self.spec['agent']} takes nstep=1 (SB3's 1-step returns), got nstep={s.nstep}")
        wall0 = self.wall
        self._bar_frame = min(self.frame, s.frames)
        bar = tqdm(total=s.frames, initial=self._bar_frame, unit="frame", unit_scale=True,
                   desc=f"train {self.spec['agent']}/{self.spec['mode']}", disable=not s.progress, mininterval=0.5)
        self.model.set_logger(SB3Logger(folder=None, output_formats=[_MetricsWriter(self, logger)]))
        with StopWhen(s.max_minutes) as stop:
            steps = -(-s.frames // self.action_repeat) - int(self.model.num_timesteps)
            if steps > 0 and self.frame >= self.next_eval:
                self.evaluate_and_log(logger, bar)  # the untrained policy at frame 0, as agent=sac does
            if steps > 0:
                self.model.learn(total_timesteps=steps, callback=_Loop(self, logger, stop, bar, wall0),
                                 reset_num_timesteps=False, log_interval=1)
            self.stopped = stop.reason
            self.save_timed(wall0, stop.deadline)
            if self.stopped in (None, "max_minutes") and (not self.history or self.history[-1]["frame"] < self.frame):
                self.evaluate_and_log(logger, bar)
                self.save_timed(wall0, stop.deadline)
            bar.close()
            summary = self.summary(self.stopped)
            if self.stopped is not None:
                logger.summary(summary)
                stop.raise_if_signalled(f"at frame {self.frame}", self.run_dir)
        return summary

    def summary(self, stopped: str | None = None) -> dict[str, Any]:
        from agents.loop import run_summary

        return run_summary(self, stopped, steps=int(self.model.num_timesteps), episodes=self.episode,
                           updates=self.updates)


def representation(spec: dict[str, Any], model: Any, features: Features | None) -> tuple[str, int]:
    """(source, width) of what the policy acts on, for the summary."""
    if features is not None:
        return features.source, features.repr_dim
    ext = model.actor.features_extractor if hasattr(model, "actor") else model.policy.features_extractor
    return getattr(ext, "source", type(ext).__name__), int(ext.features_dim)


__all__ = ["CONFIGS", "SB3_ALGOS", "SB3_MODES", "FrozenFeatures", "SB3PPOConfig", "SB3SACConfig", "SB3Trainer",
           "WorldsslExtractor", "build_model", "check_action_space", "check_pixel_space", "encode_frozen",
           "encoder_features", "frozen_features", "load_model", "load_replay", "load_weights", "save_replay"]
