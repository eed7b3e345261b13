"""``worldssl bench agents``: pixel SAC against Stable-Baselines3, replay memory, and frozen vs scratch frames/s.

Three figures, each beside a baseline measured in the same run:

* **SAC update steps/s** (``encoder.mode=scratch``, pixels): our :class:`agents.sac.SACAgent` against SB3's
  ``SAC("CnnPolicy")`` whose features extractor is the same DrQ conv trunk (4 3x3 convs of 32 channels, stride
  2, 1, 1, 1, then Linear to ``feature_dim``, LayerNorm, tanh), with the same MLP widths (``net_arch=[H, H]``,
  two critics), batch, observation shape ``(3 * 3, S, S)`` uint8, learning rate, Polyak rate and initial
  temperature. Both replays are filled with the same random frames; each timed step samples its replay and
  updates (ours: ``agent.update(replay.sample(B, rng))``; SB3: ``model.train(gradient_steps=n, batch_size=B)``).
  Same device and CPU thread count, warm-up updates first, then repeats in alternation (the order flipped every
  repeat), median over repeats.
* **Replay bytes per transition**: our :class:`worldssl.data.replay.ReplayBuffer` (each uint8 frame once,
  stacks rebuilt by index) against SB3's ``ReplayBuffer`` on the same stacked observations, allocated arrays
  only (nothing is filled).
* **End-to-end frames/s** of :class:`agents.loop.AgentTrainer` on DMC in ``frozen`` mode (a frozen random conv
  encoder: each frame is encoded once and the replay holds features) against ``scratch`` mode, same batch and
  widths; env frames (action repeat included) per second after the seed frames, evaluation excluded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from worldssl.bench.common import Row, setting_reader

#: steps per random episode used to fill the replays (a DMC episode at action repeat 8)
FILL_EPISODE_STEPS = 125
SB3_NAMES = {True: "SB3 SAC CnnPolicy, shared extractor", False: "SB3 SAC CnnPolicy, separate extractors (SB3 default)"}


@dataclass
class Settings:
    batch: int = 128                 # update bench: transitions per update, both sides
    image_size: int = 84
    frame_channels: int = 3          # one RGB frame
    frame_stack: int = 3             # observation = 3 stacked frames (9 x S x S)
    action_dim: int = 6
    hidden_dim: int = 1024           # MLP width (ours: SACConfig.hidden_dim; SB3: net_arch=[H, H])
    feature_dim: int = 50            # trunk width (ours: SACConfig.feature_dim; SB3: the extractor's features_dim)
    replay_size: int = 1000          # random transitions in each replay for the update bench
    updates: int = 10                # timed updates per side and repeat
    warmup: int = 2                  # untimed updates per side first
    repeats: int = 3
    actor_update_every: int = 1      # ours; 1 = SB3 SAC's schedule (actor and temperature every update)
    target_update_every: int = 1     # ours and SB3's target_update_interval
    sb3_share: list[bool] = field(default_factory=lambda: [True])
    bytes_capacity: int = 10_000     # replay bytes: transitions allocated on both sides
    e2e: bool = True
    e2e_task: str = "cartpole-swingup"
    e2e_image_size: int = 64
    e2e_batch: int = 32
    e2e_seed_frames: int = 1000      # random-action frames before the first update (not timed)
    e2e_frames: int = 2000           # timed frames after the seed frames (action repeat included)
    threads: int | None = 1
    bf16: bool | str = "auto"        # also time ours with agent.amp=true (bf16 autocast); auto: on AMX-class CPUs
    device: str = "auto"
    seed: int = 0

    @classmethod
    def from_cfg(cls, cfg: Any) -> Settings:
        get = setting_reader(cfg)
        d = cls()
        share = get("agent_sb3_share_features_extractor", d.sb3_share)
        share = [share] if isinstance(share, bool) else list(share)
        raw_threads = cfg.get("agent_threads", d.threads) if hasattr(cfg, "get") else d.threads
        return cls(batch=int(get("agent_batch", d.batch)), image_size=int(get("agent_image_size", d.image_size)),
                   frame_stack=int(get("agent_frame_stack", d.frame_stack)),
                   action_dim=int(get("agent_action_dim", d.action_dim)),
                   hidden_dim=int(get("agent_hidden_dim", d.hidden_dim)),
                   feature_dim=int(get("agent_feature_dim", d.feature_dim)),
                   replay_size=int(get("agent_replay_size", d.replay_size)),
                   updates=int(get("agent_updates", d.updates)), warmup=int(get("agent_warmup", d.warmup)),
                   repeats=int(get("repeats", d.repeats)),
                   actor_update_every=int(get("agent_actor_update_every", d.actor_update_every)),
                   target_update_every=int(get("agent_target_update_every", d.target_update_every)),
                   sb3_share=[bool(x) for x in share],
                   bytes_capacity=int(get("agent_bytes_capacity", d.bytes_capacity)),
                   e2e=bool(get("agent_e2e", d.e2e)), e2e_task=str(get("agent_e2e_task", d.e2e_task)),
                   e2e_image_size=int(get("agent_e2e_image_size", d.e2e_image_size)),
                   e2e_batch=int(get("agent_e2e_batch", d.e2e_batch)),
                   e2e_seed_frames=int(get("agent_e2e_seed_frames", d.e2e_seed_frames)),
                   e2e_frames=int(get("agent_e2e_frames", d.e2e_frames)),
                   threads=None if raw_threads is None or str(raw_threads).lower() in ("null", "none", "auto")
                   else int(raw_threads),
                   bf16=_bool_or_auto(get("agent_bf16", d.bf16)),
                   device=str(get("device", d.device)), seed=int(get("seed", d.seed)))

    def validate(self) -> None:
        from worldssl.runtime.errors import ConfigError

        positive = {"agent_batch": self.batch, "agent_image_size": self.image_size,
                    "agent_frame_stack": self.frame_stack, "agent_action_dim": self.action_dim,
                    "agent_hidden_dim": self.hidden_dim, "agent_feature_dim": self.feature_dim,
                    "agent_replay_size": self.replay_size, "agent_updates": self.updates, "repeats": self.repeats,
                    "agent_actor_update_every": self.actor_update_every,
                    "agent_target_update_every": self.target_update_every,
                    "agent_bytes_capacity": self.bytes_capacity, "agent_e2e_batch": self.e2e_batch,
                    "agent_e2e_image_size": self.e2e_image_size, "agent_e2e_frames": self.e2e_frames}
        bad = [k for k, v in positive.items() if v < 1]
        if bad:
            raise ConfigError(f"{', '.join(bad)} must be >= 1")
        if self.warmup < 0 or self.e2e_seed_frames < 0:
            raise ConfigError("agent_warmup and agent_e2e_seed_frames must be >= 0")
        if self.replay_size < 2:
            raise ConfigError(f"agent_replay_size must be >= 2 transitions, got {self.replay_size}")
        if self.image_size < 12 or self.e2e_image_size < 12:
            raise ConfigError("agent_image_size and agent_e2e_image_size must be >= 12 (four 3x3 convs)")
        if "-" not in self.e2e_task:
            raise ConfigError(f"agent_e2e_task must be a DMC domain-task such as cartpole-swingup, got "
                              f"{self.e2e_task!r}")

    def times_bf16(self, device) -> bool:
        """Whether ours is also timed under bf16 autocast: SAC's own ``amp=auto`` is CUDA only, so on a CPU with
        bf16 matrix units (AMX) this row shows what ``agent.amp=true`` buys there."""
        from worldssl.runtime.device import cpu_has_bf16_matmul

        if self.bf16 == "auto":
            return device.type == "cpu" and cpu_has_bf16_matmul()
        return bool(self.bf16)

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        return (self.frame_stack * self.frame_channels, self.image_size, self.image_size)


# -- the SB3 side ---------------------------------------------------------------------------------------
def drq_extractor_class() -> type:
    """An SB3 ``BaseFeaturesExtractor`` with the DrQ conv encoder of :class:`worldssl.encoders.ConvEncoder`."""
    import torch
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
    from torch import nn

    class DrQConvExtractor(BaseFeaturesExtractor):
        """4 3x3 convs of ``num_filters`` channels (stride 2, 1, 1, 1), ReLU, flatten, Linear, LayerNorm, tanh."""

        def __init__(self, observation_space, features_dim: int = 50, num_filters: int = 32, num_layers: int = 4):
            super().__init__(observation_space, features_dim)
            layers: list[nn.Module] = []
            in_ch = observation_space.shape[0]
            for i in range(num_layers):
                layers += [nn.Conv2d(in_ch, num_filters, 3, stride=2 if i == 0 else 1), nn.ReLU(inplace=True)]
                in_ch = num_filters
            self.convs = nn.Sequential(*layers, nn.Flatten())
            with torch.no_grad():
                n = self.convs(torch.zeros(1, *observation_space.shape)).shape[1]
            self.head = nn.Sequential(nn.Linear(n, features_dim), nn.LayerNorm(features_dim), nn.Tanh())

        def forward(self, observations: torch.Tensor) -> torch.Tensor:
            # SB3 has scaled the uint8 pixels to [0, 1] (normalize_images=True); centre them as ours does
            return self.head(self.convs(observations - 0.5))

    return DrQConvExtractor


def _pixel_env(obs_shape: tuple[int, ...], action_dim: int) -> Any:
    """A gymnasium env with the bench's spaces; it is never stepped while timing (no rendering is timed)."""
    import gymnasium as gym

    class PixelSpaces(gym.Env):
        def __init__(self):
            self.observation_space = gym.spaces.Box(0, 255, obs_shape, np.uint8)
            self.action_space = gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return np.zeros(obs_shape, np.uint8), {}

        def step(self, action):
            return np.zeros(obs_shape, np.uint8), 0.0, False, False, {}

    return PixelSpaces()


def _bool_or_auto(value: Any) -> bool | str:
    from worldssl.runtime.errors import ConfigError
    from worldssl.runtime.settings import amp_mode

    if not amp_mode(value):
        raise ConfigError(f"agent_bf16 must be {amp_mode.valid}, got {value!r}")
    return value


def _discount() -> float:
    """The loop's default discount, used on both sides."""
    from agents.loop import LoopSettings

    return float(LoopSettings().discount)


def build_sb3(s: Settings, share: bool, device) -> Any:
    """SB3's SAC with our hyper-parameters where SB3 has them, its replay holding ``replay_size`` transitions."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.logger import Logger as SB3Logger

    from agents.sac import SACConfig

    c = SACConfig()
    model = SAC("CnnPolicy", _pixel_env(s.obs_shape, s.action_dim), learning_rate=c.lr, buffer_size=s.replay_size,
                learning_starts=0, batch_size=s.batch, tau=c.critic_tau, gamma=_discount(),
                ent_coef=f"auto_{c.init_temperature}", target_update_interval=s.target_update_every,
                policy_kwargs={"features_extractor_class": drq_extractor_class(),
                               "features_extractor_kwargs": {"features_dim": s.feature_dim},
                               "net_arch": [s.hidden_dim, s.hidden_dim], "share_features_extractor": share},
                device=str(device), seed=s.seed, verbose=0)
    model.set_logger(SB3Logger(folder=None, output_formats=[]))  # train() records its losses; nothing is written
    return model


# -- filling both replays with the same random transitions ----------------------------------------------
def random_episodes(s: Settings, rng: np.random.Generator):
    """Episodes of random uint8 frames ``(T+1, C, H, W)`` and actions / rewards, ``replay_size`` steps in all."""
    left = s.replay_size
    while left > 0:
        steps = min(FILL_EPISODE_STEPS, left)
        frames = rng.integers(0, 256, (steps + 1, s.frame_channels, s.image_size, s.image_size), dtype=np.uint8)
        action = rng.uniform(-1, 1, (steps, s.action_dim)).astype(np.float32)
        reward = rng.uniform(0, 1, steps).astype(np.float32)
        yield frames, action, reward
        left -= steps


def fill_ours(replay: Any, episodes: list) -> None:
    for frames, action, reward in episodes:
        truncated = np.zeros(len(action), bool)
        truncated[-1] = True  # a time limit ends each episode, as in DMC
        replay.add_episode(frames, action, reward, np.zeros(len(action), bool), truncated)


def fill_sb3(buffer: Any, episodes: list, frame_stack: int) -> None:
    from agents.loop import stack_frames

    for frames, action, reward in episodes:
        obs = stack_frames(frames, frame_stack)
        for t in range(len(action)):
            last = t == len(action) - 1
            buffer.add(obs[t][None], obs[t + 1][None], action[t][None], reward[t:t + 1], np.array([last]),
                       [{"TimeLimit.truncated": last}])


# -- figure 1: SAC update steps/s ------------------------------------------------------------------------
def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def update_rows(s: Settings, device) -> list[Row]:
    import torch

    from agents.encoders import build_features
    from agents.sac import SACAgent, SACConfig
    from worldssl.data.replay import ReplayBuffer

    episodes = list(random_episodes(s, np.random.default_rng(s.seed)))
    torch.manual_seed(s.seed)
    cfg = SACConfig(hidden_dim=s.hidden_dim, feature_dim=s.feature_dim, actor_update_every=s.actor_update_every,
                    target_update_every=s.target_update_every)
    agent = SACAgent(build_features("scratch", s.obs_shape), s.action_dim, "scratch", cfg, device)
    agents = {"ours": agent}
    if s.times_bf16(device):
        torch.manual_seed(s.seed)
        agents["ours_bf16"] = SACAgent(build_features("scratch", s.obs_shape), s.action_dim, "scratch",
                                       dataclasses.replace(cfg, amp=True), device)
    frame_shape = (s.frame_channels, s.image_size, s.image_size)
    replay = ReplayBuffer(s.replay_size + len(episodes), frame_shape, s.frame_stack, (s.action_dim,),
                          discount=_discount())
    fill_ours(replay, episodes)
    sample_rng = np.random.default_rng([s.seed, 1])
    models = {}
    for share in s.sb3_share:
        models[share] = build_sb3(s, share, device)
        fill_sb3(models[share].replay_buffer, episodes, s.frame_stack)
    del episodes

    def ours(agent: Any) -> Any:
        def fn(n: int) -> None:
            for _ in range(n):
                agent.update(replay.sample(s.batch, sample_rng))
            _sync(device)
        return fn

    def sb3(model: Any) -> Any:
        def fn(n: int) -> None:
            model.train(gradient_steps=n, batch_size=s.batch)
            _sync(device)
        return fn

    sides = [(key, ours(a)) for key, a in agents.items()] + [(share, sb3(m)) for share, m in models.items()]
    for _, fn in sides:
        if s.warmup:
            fn(s.warmup)
    rates: dict[Any, list[float]] = {key: [] for key, _ in sides}
    for r in range(s.repeats):  # alternate, the order rotated every repeat
        k = r % len(sides)
        for key, fn in sides[k:] + sides[:k]:
            t0 = time.perf_counter()
            fn(s.updates)
            rates[key].append(s.updates / (time.perf_counter() - t0))
    ours_rate = statistics.median(rates["ours"])
    label = f"sac update scratch {'x'.join(map(str, s.obs_shape))} b{s.batch} h{s.hidden_dim}"
    rows = []
    for share in models:
        base = statistics.median(rates[share])
        rows.append(Row(label, "updates/s", ours_rate, base, SB3_NAMES[share], ">= 2x"))
        print(f"  sac update: ours {ours_rate:.3g} vs {SB3_NAMES[share]} {base:.3g} updates/s "
              f"({ours_rate / base:.2f}x)", flush=True)
    if "ours_bf16" in rates:  # SB3 has no autocast: its side stays float32
        bf16_rate = statistics.median(rates["ours_bf16"])
        for share in models:
            base = statistics.median(rates[share])
            rows.append(Row(f"{label} (ours agent.amp=true: bf16 autocast)", "updates/s", bf16_rate, base,
                            SB3_NAMES[share] + " (float32)", ""))
            print(f"  sac update: ours with agent.amp=true (bf16 autocast) {bf16_rate:.3g} vs {SB3_NAMES[share]} "
                  f"{base:.3g} updates/s ({bf16_rate / base:.2f}x)", flush=True)
    return rows


# -- figure 2: replay bytes per transition --------------------------------------------------------------
def sb3_bytes_per_transition(capacity: int, obs_shape: tuple[int, ...], action_dim: int,
                             optimize_memory_usage: bool) -> float:
    """Allocated bytes of SB3's ``ReplayBuffer`` arrays (obs, next_obs, actions, rewards, dones, timeouts) / N."""
    import gymnasium as gym
    from stable_baselines3.common.buffers import ReplayBuffer as SB3ReplayBuffer

    buf = SB3ReplayBuffer(capacity, gym.spaces.Box(0, 255, obs_shape, np.uint8),
                          gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32), device="cpu",
                          optimize_memory_usage=optimize_memory_usage,
                          # SB3 refuses optimize_memory_usage together with timeout handling
                          handle_timeout_termination=not optimize_memory_usage)
    arrays = [getattr(buf, name, None) for name in
              ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")]
    return sum(a.nbytes for a in arrays if a is not None) / buf.buffer_size


def bytes_rows(s: Settings) -> list[Row]:
    from worldssl.data.replay import ReplayBuffer

    frame_shape = (s.frame_channels, s.image_size, s.image_size)
    ours = ReplayBuffer(s.bytes_capacity, frame_shape, s.frame_stack, (s.action_dim,)).bytes_per_transition()
    label = (f"replay {'x'.join(map(str, frame_shape))} frames, stack {s.frame_stack}, A={s.action_dim}, "
             f"N={s.bytes_capacity:,}")
    rows = []
    for optimize, target in ((False, "<= 0.25x"), (True, "")):
        base = sb3_bytes_per_transition(s.bytes_capacity, s.obs_shape, s.action_dim, optimize)
        name = f"SB3 ReplayBuffer (optimize_memory_usage={optimize})"
        rows.append(Row(label, "bytes / transition (lower is better)", ours, base, name, target))
        print(f"  replay: ours {ours:,.0f} vs {name} {base:,.0f} bytes/transition ({ours / base:.3f}x)", flush=True)
    return rows


# -- figure 3: end-to-end frames/s, frozen vs scratch -----------------------------------------------------
def e2e_rate(s: Settings, mode: str, device) -> float:
    """Env frames/s (action repeat included) of :class:`AgentTrainer` after the seed frames, eval excluded."""
    import torch

    import envs
    from agents.encoders import build_features
    from agents.loop import AgentTrainer, LoopSettings
    from agents.sac import SACAgent, SACConfig
    from worldssl.runtime.logger import Logger

    domain, _, task = s.e2e_task.partition("-")

    def make():
        return envs.make("worldssl/DMC-v0", domain=domain, task=task, image_size=s.e2e_image_size,
                         frame_stack=s.frame_stack)

    env, eval_env = make(), make()
    torch.manual_seed(s.seed)
    agent = SACAgent(build_features(mode, env.observation_space.shape), int(env.action_space.shape[0]), mode,
                     SACConfig(hidden_dim=s.hidden_dim, feature_dim=s.feature_dim), device)
    loop = LoopSettings(frames=s.e2e_seed_frames + s.e2e_frames, seed_frames=s.e2e_seed_frames,
                        batch_size=s.e2e_batch, eval_every_frames=10**12, eval_episodes=1,
                        save_every_frames=10**12, video=False, seed=s.seed, progress=False)
    stamps: list[float] = []
    step = env.step

    def timed_step(action):  # the time after each training env step
        out = step(action)
        stamps.append(time.perf_counter())
        return out

    env.step = timed_step  # an instance attribute: the loop calls it for every training step
    try:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = AgentTrainer(agent, env, eval_env, loop, tmp, spec={"agent": "sac", "mode": mode})
            # the loop's eval lines (frame N: eval return ...) are not part of this table
            with Logger(tmp, tensorboard=False) as logger, contextlib.redirect_stdout(io.StringIO()):
                trainer.train(logger)
            repeat = trainer.action_repeat
    finally:
        env.close()
        eval_env.close()
    first = max(s.e2e_seed_frames // repeat - 1, 0)  # the last seed step's stamp (or the first step's)
    if len(stamps) - 1 <= first:
        raise ValueError(f"agent_e2e_frames={s.e2e_frames} leaves no timed step; raise it")
    return (len(stamps) - 1 - first) * repeat / (stamps[-1] - stamps[first])


def e2e_rows(s: Settings, device) -> list[Row]:
    rates = {}
    for mode in ("frozen", "scratch"):
        rates[mode] = e2e_rate(s, mode, device)
        print(f"  train {s.e2e_task} {mode}: {rates[mode]:,.1f} frames/s", flush=True)
    label = f"train dmc {s.e2e_task} {s.e2e_image_size}x{s.e2e_image_size} b{s.e2e_batch} h{s.hidden_dim}"
    return [Row(label, "frames/s, frozen mode (random conv)", rates["frozen"], rates["scratch"],
                "scratch mode (same run)")]


# -- entry ------------------------------------------------------------------------------------------------
def run(cfg: Any) -> list[Row]:
    import torch

    from worldssl.runtime.device import resolve_device

    s = Settings.from_cfg(cfg)
    s.validate()
    device = resolve_device(s.device)
    threads = torch.get_num_threads()
    if s.threads is not None:
        torch.set_num_threads(s.threads)
    try:
        return _run(s, device)
    finally:
        torch.set_num_threads(threads)


def _run(s: Settings, device) -> list[Row]:
    import torch

    from agents.sac import SACConfig

    where = f"{device}" + (f", {torch.get_num_threads()} thread(s) both sides" if device.type == "cpu" else "")
    shape = "x".join(map(str, s.obs_shape))
    print(f"bench agents: pixel SAC, scratch DrQ conv encoder (4 3x3 convs, 32 ch, stride 2,1,1,1; Linear to "
          f"{s.feature_dim}, LayerNorm, tanh), MLPs {s.hidden_dim}x{s.hidden_dim}, 2 critics, obs {shape} uint8, "
          f"batch {s.batch}, on {where}\n"
          f"  updates/s: median of {s.repeats} repeats of {s.updates} updates per side after {s.warmup} warm-up, "
          f"alternating; each update samples its replay ({s.replay_size:,} random transitions, the same frames "
          f"both sides)\n"
          f"  ours: conv trunk trained by the critic loss, actor on detached features, actor and temperature every "
          f"{s.actor_update_every}, target every {s.target_update_every} update(s), random-shift augmentation "
          f"(pad {SACConfig().augment_pad}) of obs and next_obs; per update 2 conv forward passes (obs, next_obs), 1 backward\n"
          f"  SB3: SAC('CnnPolicy', policy_kwargs=features_extractor_class=DrQConvExtractor, net_arch=[{s.hidden_dim}, "
          f"{s.hidden_dim}]), actor and temperature every update, target_update_interval={s.target_update_every}, "
          f"no augmentation. share_features_extractor=True: one extractor for actor and critic, trained by the "
          f"actor loss only (SACPolicy gives the critic optimiser only parameters outside 'features_extractor', "
          f"and ContinuousCritic runs a shared extractor under no_grad); 5 conv forward passes per update (actor "
          f"obs and next_obs, target critic's own extractor, critic twice), 1 backward. False (SB3's default): "
          f"actor, critic and target critic each have their own; 5 forward, 3 backward", flush=True)
    rows = update_rows(s, device)
    rows += bytes_rows(s)
    print(f"  replay: ours counts every array per frame slot (frames, actions, rewards, flags, step index); a slot "
          f"per step plus one per episode start ({1 / FILL_EPISODE_STEPS:.1%} more for {FILL_EPISODE_STEPS}-step episodes)", flush=True)
    if s.e2e:
        print(f"  end-to-end: AgentTrainer on DMC {s.e2e_task} {s.e2e_image_size}x{s.e2e_image_size}, stack "
              f"{s.frame_stack}, batch {s.e2e_batch}; env frames (action repeat included) per second over "
              f"{s.e2e_frames:,} frames after {s.e2e_seed_frames:,} seed frames, eval and checkpoints excluded; "
              f"frozen = random conv encoder frozen, each frame encoded once, the replay holds features", flush=True)
        rows += e2e_rows(s, device)
    return rows
