"""The online replay buffer of the pixel agents (SAC with the CURL / DrQ recipe).

Every frame is stored once, as uint8, in a ring of ``capacity`` frame slots: one slot per environment
step plus one per episode start (the reset frame). Slot ``i`` holds the frame at step ``t[i]`` of its
episode and, once :meth:`ReplayBuffer.add` has written it, the transition taken from that frame
(action, reward, ``terminated``, ``truncated``). Stacked observations are rebuilt by index exactly as
``envs.wrappers.FrameStack`` builds them online and as ``worldssl.data.episodes`` rebuilds them from
files: the stack at step ``t`` is ``frame[max(t-k+1, 0)], ..., frame[t]`` along channels, oldest first,
never reaching into another episode.

n-step targets are computed at sample time, so the stored state does not depend on ``nstep`` or
``discount``. Starting at step ``t`` the return sums ``g**j * r_{t+j}`` over the ``m <= n`` steps actually
taken before the episode ends; ``discount`` is ``g**m``, or 0 if one of those steps *terminated*. A
*truncated* step (a time limit, as every DMC episode ends) bootstraps from ``next_obs``, the last
observation of the episode. A transition of the episode in progress becomes sampleable once its n-step
lookahead is written (or its episode has ended); when the ring wraps, a transition whose stacked frames
were overwritten is never sampled (its lookahead frames are newer than it, so they survive as long as it
does).

``feature_dim`` adds one float32 feature row per frame slot (the encoder's features of the stacked
observation at that step), sampled instead of pixels; ``store_frames=False`` keeps only the features
(frozen-encoder mode).

Sampling is vectorised: candidates are drawn uniformly over the held slots and the invalid ones (the
last frame of each episode, the pending tail of the episode in progress, the few frames whose stacks were
overwritten) are redrawn, which leaves each kept draw uniform over the valid transitions.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

_STATE_VERSION = 1


class ReplayBatch(NamedTuple):
    """One sampled batch; ``obs`` / ``next_obs`` are ``(B, k*C, H, W)`` uint8 stacks or ``(B, D)`` float32."""

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray  # (B,) float32: sum_{j<m} g**j r_{t+j}
    discount: np.ndarray  # (B,) float32: g**m, or 0.0 if the episode terminated within those m steps
    next_obs: np.ndarray  # observation at t+m


class ReplayBuffer:
    """Ring buffer of single uint8 frames (and/or feature rows) with n-step returns built at sample time.

    Args:
        capacity: frame slots (one per step plus one per episode start); the figure memory scales with.
        frame_shape: ``(C, H, W)`` of one env frame (not the stacked observation).
        frame_stack: frames per observation ``k``, stacked oldest first along channels.
        action_shape: shape of one action (``()`` for a discrete action with ``action_dtype=np.int64``).
        discount: ``g`` of the n-step return.
        nstep: steps ``n`` of the return.
        feature_dim: if set, store a float32 feature row per frame slot and sample features by default.
        store_frames: keep the pixels; ``False`` needs ``feature_dim`` (frozen-encoder mode).
    """

    def __init__(self, capacity: int, frame_shape: tuple[int, int, int], frame_stack: int,
                 action_shape: tuple[int, ...], action_dtype=np.float32, discount: float = 0.99, nstep: int = 1,
                 feature_dim: int | None = None, store_frames: bool = True):
        capacity, frame_stack, nstep = int(capacity), int(frame_stack), int(nstep)
        if capacity < 2:
            raise ValueError(f"capacity must be >= 2 frame slots, got {capacity}; raise replay capacity")
        if frame_stack < 1 or nstep < 1:
            raise ValueError(f"frame_stack and nstep must be >= 1, got {frame_stack} and {nstep}")
        if not 0.0 <= float(discount) <= 1.0:
            raise ValueError(f"discount must lie in [0, 1], got {discount}")
        if len(tuple(frame_shape)) != 3:
            raise ValueError(f"frame_shape must be (C, H, W), got {tuple(frame_shape)}")
        if not store_frames and feature_dim is None:
            raise ValueError("store_frames=False keeps only features; pass feature_dim (or keep store_frames=True)")
        if feature_dim is not None and int(feature_dim) < 1:
            raise ValueError(f"feature_dim must be >= 1, got {feature_dim}")
        self.capacity = capacity
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.frame_stack = frame_stack
        self.action_shape = tuple(int(s) for s in action_shape)
        self.action_dtype = np.dtype(action_dtype)
        self.discount = float(discount)
        self.nstep = nstep
        self.feature_dim = None if feature_dim is None else int(feature_dim)
        self.store_frames = bool(store_frames)

        self._frames = np.zeros((capacity, *self.frame_shape), np.uint8) if self.store_frames else None
        self._features = (np.zeros((capacity, self.feature_dim), np.float32)
                          if self.feature_dim is not None else None)
        self._action = np.zeros((capacity, *self.action_shape), self.action_dtype)
        self._reward = np.zeros(capacity, np.float32)
        self._terminated = np.zeros(capacity, bool)
        self._truncated = np.zeros(capacity, bool)
        self._has_next = np.zeros(capacity, bool)  # the transition from this frame is written
        self._t = np.zeros(capacity, np.int32)  # step of this frame within its episode
        self._total = 0  # frames ever written; the newest frame has global index _total - 1
        self._open = False  # an episode is in progress (started, not ended)
        self._transitions_added = 0
        self._episodes = 0

    # ------------------------------------------------------------------ sizes
    @property
    def num_frames(self) -> int:
        """Frames (slots) held now."""
        return min(self._total, self.capacity)

    @property
    def num_transitions_added(self) -> int:
        """Transitions ever added (overwritten ones included)."""
        return self._transitions_added

    @property
    def num_episodes_started(self) -> int:
        return self._episodes

    @property
    def obs_shape(self) -> tuple[int, ...]:
        c, h, w = self.frame_shape
        return (self.frame_stack * c, h, w)

    def __len__(self) -> int:
        """Transitions that can be sampled now (in the default mode: features if ``feature_dim`` is set)."""
        return len(self.indices())

    def nbytes(self) -> int:
        """Bytes held by all arrays."""
        arrays = (self._frames, self._features, self._action, self._reward, self._terminated, self._truncated,
                  self._has_next, self._t)
        return int(sum(a.nbytes for a in arrays if a is not None))

    def bytes_per_transition(self) -> float:
        """``nbytes() / capacity``: the memory a stored step costs."""
        return self.nbytes() / self.capacity

    def __repr__(self) -> str:
        return (f"ReplayBuffer(capacity={self.capacity}, frames={self.num_frames}, frame_shape={self.frame_shape}, "
                f"frame_stack={self.frame_stack}, nstep={self.nstep}, feature_dim={self.feature_dim}, "
                f"store_frames={self.store_frames})")

    # ------------------------------------------------------------------ writing
    def _check_frame(self, frame, what: str) -> np.ndarray | None:
        if not self.store_frames:
            return None
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.shape != self.frame_shape:
            stacked = frame.ndim == 3 and frame.shape[1:] == self.frame_shape[1:] and frame.shape[0] > self.frame_shape[0]
            hint = " (a stacked observation?)" if stacked else ""
            raise ValueError(f"{what} must be uint8 {self.frame_shape}, got {frame.dtype} {frame.shape}{hint}; "
                             f"pass the env's raw uint8 frame")
        return frame

    def _check_feature(self, feature, what: str) -> np.ndarray | None:
        if self.feature_dim is None:
            return None
        if feature is None:
            raise ValueError(f"this buffer stores features (feature_dim={self.feature_dim}); pass {what}")
        feature = np.asarray(feature, np.float32)
        if feature.shape != (self.feature_dim,):
            raise ValueError(f"{what} must have shape ({self.feature_dim},), got {feature.shape}; "
                             f"pass one unbatched feature row")
        return feature

    def _write_frame(self, frame, feature, t: int) -> None:
        slot = self._total % self.capacity
        if self._frames is not None:
            self._frames[slot] = frame
        if self._features is not None:
            self._features[slot] = feature
        self._t[slot] = t
        self._has_next[slot] = False  # the overwritten slot's transition is gone with its frame
        self._action[slot] = 0
        self._reward[slot] = 0.0
        self._terminated[slot] = self._truncated[slot] = False
        self._total += 1

    def _close_open_episode(self) -> None:
        """An episode abandoned without an end flag: its last transition becomes a truncation (bootstraps)."""
        if self._open:
            last = (self._total - 1) % self.capacity
            prev = (last - 1) % self.capacity
            if self._t[last] > 0 and self._total >= 2 and self._has_next[prev]:
                self._truncated[prev] = True
            self._open = False

    def start_episode(self, frame: np.ndarray | None, feature: np.ndarray | None = None) -> None:
        """Record the first frame ``(C, H, W)`` of an episode (after ``env.reset``). ``feature``: the encoder's
        features of the stacked observation at this step (required when ``feature_dim`` is set). ``frame``
        may be ``None`` when ``store_frames=False``."""
        frame = self._check_frame(frame, "start_episode frame")
        feature = self._check_feature(feature, "start_episode(frame, feature=...)")
        self._close_open_episode()
        self._write_frame(frame, feature, 0)
        self._open = True
        self._episodes += 1

    def _check_action(self, action) -> np.ndarray:
        action = np.asarray(action)
        if action.shape != self.action_shape:
            raise ValueError(f"action must have shape {self.action_shape}, got {action.shape}; "
                             f"pass one unbatched action")
        return action.astype(self.action_dtype, copy=False)

    def add(self, action, reward: float, next_frame: np.ndarray | None, terminated: bool, truncated: bool,
            next_feature: np.ndarray | None = None) -> None:
        """Record one step: ``action`` taken from the latest frame, its ``reward`` and end flags, and the
        frame it led to. After a ``terminated`` or ``truncated`` step, call :meth:`start_episode` next."""
        if not self._open:
            if self._episodes == 0:
                raise ValueError("add() called before start_episode(); call start_episode(first_frame) after "
                                 "each env.reset()")
            raise ValueError("add() after the episode ended (terminated or truncated); call "
                             "start_episode(reset_frame) first")
        action = self._check_action(action)
        next_frame = self._check_frame(next_frame, "next_frame")
        next_feature = self._check_feature(next_feature, "add(..., next_feature=...)")
        slot = (self._total - 1) % self.capacity
        self._action[slot] = action
        self._reward[slot] = reward
        self._terminated[slot] = bool(terminated)
        self._truncated[slot] = bool(truncated)
        self._has_next[slot] = True
        self._write_frame(next_frame, next_feature, int(self._t[slot]) + 1)
        self._transitions_added += 1
        if terminated or truncated:
            self._open = False

    def add_episode(self, obs: np.ndarray | None, action: np.ndarray, reward: np.ndarray, terminated: np.ndarray,
                    truncated: np.ndarray, features: np.ndarray | None = None) -> None:
        """Bulk-load one episode: ``obs`` ``(T+1, C, H, W)`` uint8 single frames, ``action`` ``(T, ...)``,
        ``reward`` / ``terminated`` / ``truncated`` ``(T,)``, ``features`` ``(T+1, D)``. The same as
        :meth:`start_episode` followed by ``T`` :meth:`add` calls (if no flag ends it, the episode stays
        open for further adds)."""
        action = np.asarray(action)
        steps = len(action)
        reward = np.asarray(reward, np.float32).reshape(-1)
        terminated = np.asarray(terminated, bool).reshape(-1)
        truncated = np.asarray(truncated, bool).reshape(-1)
        if action.shape[1:] != self.action_shape:
            raise ValueError(f"action must be (T, *{self.action_shape}), got {action.shape}")
        for name, arr in (("reward", reward), ("terminated", terminated), ("truncated", truncated)):
            if len(arr) != steps:
                raise ValueError(f"{name} has length {len(arr)}, expected {steps} (one per action)")
        ended = terminated | truncated
        if steps and ended[:-1].any():
            raise ValueError(f"episode ends at step {int(np.flatnonzero(ended)[0])} of {steps}; only its last "
                             f"step may be terminated or truncated (split it into episodes)")
        if self.store_frames:
            obs = np.asarray(obs)
            if obs.dtype != np.uint8 or obs.shape != (steps + 1, *self.frame_shape):
                raise ValueError(f"obs must be uint8 (T+1, {self.frame_shape}) = {(steps + 1, *self.frame_shape)}, "
                                 f"got {obs.dtype} {obs.shape}; pass single frames, not stacks")
        if self.feature_dim is not None:
            if features is None:
                raise ValueError(f"this buffer stores features (feature_dim={self.feature_dim}); pass features")
            features = np.asarray(features, np.float32)
            if features.shape != (steps + 1, self.feature_dim):
                raise ValueError(f"features must be (T+1, {self.feature_dim}), got {features.shape}")
        self._close_open_episode()
        frames = steps + 1
        skip = max(frames - self.capacity, 0)  # frames overwritten within this very episode
        j = np.arange(skip, frames)
        slots = (self._total + j) % self.capacity
        if self._frames is not None:
            self._frames[slots] = obs[skip:]
        if self._features is not None:
            self._features[slots] = features[skip:]
        self._t[slots] = j
        has = j < steps
        self._has_next[slots] = has
        act = np.zeros((len(j), *self.action_shape), self.action_dtype)
        act[has] = action[j[has]]
        self._action[slots] = act
        self._reward[slots] = np.where(has, reward[np.minimum(j, max(steps - 1, 0))] if steps else 0.0, 0.0)
        self._terminated[slots] = has & (terminated[np.minimum(j, steps - 1)] if steps else False)
        self._truncated[slots] = has & (truncated[np.minimum(j, steps - 1)] if steps else False)
        self._total += frames
        self._transitions_added += steps
        self._episodes += 1
        self._open = not (steps and ended[-1])

    # ------------------------------------------------------------------ sampling
    def _mode(self, features: bool | None) -> bool:
        if features is None:
            return self.feature_dim is not None
        if features and self.feature_dim is None:
            raise ValueError("features=True but this buffer stores no features; build it with feature_dim=...")
        if not features and not self.store_frames:
            raise ValueError("features=False but this buffer keeps no frames (store_frames=False); sample features")
        return bool(features)

    def _lookahead(self, slots: np.ndarray):
        """n-step walk from ``slots``: (ok, steps m, return, terminated within m)."""
        cap = self.capacity
        ok = self._has_next[slots].copy()
        alive = ok.copy()
        m = np.zeros(len(slots), np.int64)
        ret = np.zeros(len(slots), np.float64)
        term = np.zeros(len(slots), bool)
        for j in range(self.nstep):
            s = (slots + j) % cap
            if j > 0:  # frame s exists (the step before did not end), so its slot is current
                ok &= ~alive | self._has_next[s]
                alive &= self._has_next[s]
            ret += np.where(alive, self.discount ** j * self._reward[s].astype(np.float64), 0.0)
            m += alive
            term |= alive & self._terminated[s]
            alive &= ~(self._terminated[s] | self._truncated[s])
        return ok, m, ret, term

    def _valid(self, g: np.ndarray, feats: bool) -> np.ndarray:
        """Which global frame indices ``g`` (all held) start a sampleable transition."""
        slots = g % self.capacity
        ok = self._lookahead(slots)[0]
        if not feats and self.frame_stack > 1:
            back = np.minimum(self.frame_stack - 1, self._t[slots].astype(np.int64))
            ok &= g - back >= self._total - self.num_frames
        return ok

    def indices(self, features: bool | None = None) -> np.ndarray:
        """Slots of every transition sampleable now, oldest first (O(capacity); :meth:`sample` avoids it)."""
        feats = self._mode(features)
        g = np.arange(self._total - self.num_frames, self._total, dtype=np.int64)
        return (g[self._valid(g, feats)] % self.capacity).astype(np.int64)

    def sample_indices(self, batch_size: int, rng: np.random.Generator, features: bool | None = None) -> np.ndarray:
        """``batch_size`` slots drawn independently and uniformly over the sampleable transitions."""
        feats = self._mode(features)
        low, high = self._total - self.num_frames, self._total
        out, need = [], int(batch_size)
        for _ in range(8):  # rejection rounds; invalid slots are a small fraction once the buffer has data
            if need == 0 or high == low:
                break
            g = rng.integers(low, high, size=need + need // 4 + 8)
            kept = g[self._valid(g, feats)][:need]
            if not len(kept) and not out:
                break  # perhaps nothing valid at all: decide exactly below
            out.append(kept)
            need -= len(kept)
        if need:
            valid = self.indices(feats) if high > low else np.zeros(0, np.int64)
            if not len(valid):
                raise ValueError(f"cannot sample: the replay buffer holds no sampleable transition yet "
                                 f"({self.num_frames} frames, nstep={self.nstep}); add steps (or finish an episode) "
                                 f"before sampling")
            out.append(valid[rng.integers(0, len(valid), size=need)])
        return (np.concatenate(out) % self.capacity).astype(np.int64) if out else np.zeros(0, np.int64)

    def _stacks(self, slots: np.ndarray) -> np.ndarray:
        k = self.frame_stack
        if k == 1:
            return self._frames[slots]
        back = np.arange(k - 1, -1, -1)[None, :]  # oldest first
        idx = (slots[:, None] - np.minimum(back, self._t[slots][:, None].astype(np.int64))) % self.capacity
        frames = self._frames[idx]  # (B, k, C, H, W)
        return frames.reshape(len(slots), k * self.frame_shape[0], *self.frame_shape[1:])

    def gather(self, slots: np.ndarray, features: bool | None = None) -> ReplayBatch:
        """The batch of the transitions starting at ``slots`` (from :meth:`indices` / :meth:`sample_indices`)."""
        feats = self._mode(features)
        slots = np.asarray(slots, np.int64)
        ok, m, ret, term = self._lookahead(slots)
        if not ok.all():
            raise ValueError("gather() got slots that hold no sampleable transition; take them from indices()")
        nxt = (slots + m) % self.capacity
        discount = np.where(term, 0.0, self.discount ** m.astype(np.float64)).astype(np.float32)
        if feats:
            obs, next_obs = self._features[slots], self._features[nxt]
        else:
            obs, next_obs = self._stacks(slots), self._stacks(nxt)
        return ReplayBatch(obs, self._action[slots], ret.astype(np.float32), discount, next_obs)

    def sample(self, batch_size: int, rng: np.random.Generator, features: bool | None = None) -> ReplayBatch:
        """A uniform batch of n-step transitions; ``features=None`` samples features if ``feature_dim`` is set,
        else stacked frames."""
        feats = self._mode(features)
        return self.gather(self.sample_indices(batch_size, rng, feats), feats)

    # ------------------------------------------------------------------ save / restore
    def _config(self) -> np.ndarray:
        return np.array([self.capacity, self.frame_stack, -1 if self.feature_dim is None else self.feature_dim,
                         int(self.store_frames), *self.frame_shape], np.int64)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Plain arrays (``np.savez`` without pickle) that :meth:`load_state_dict` restores exactly."""
        d = {
            "version": np.array(_STATE_VERSION, np.int64),
            "config": self._config(),
            "action_shape": np.array(self.action_shape, np.int64),
            "action_dtype": np.array(self.action_dtype.str),
            "counters": np.array([self._total, int(self._open), self._transitions_added, self._episodes], np.int64),
            "action": self._action.copy(), "reward": self._reward.copy(), "terminated": self._terminated.copy(),
            "truncated": self._truncated.copy(), "has_next": self._has_next.copy(), "t": self._t.copy(),
        }
        if self._frames is not None:
            d["frames"] = self._frames.copy()
        if self._features is not None:
            d["features"] = self._features.copy()
        return d

    def load_state_dict(self, d) -> None:
        """Restore :meth:`state_dict` output (``nstep`` and ``discount`` may differ: returns are built at sample time)."""
        if int(np.asarray(d["version"])) > _STATE_VERSION:
            raise ValueError("replay state is from a newer worldssl; upgrade worldssl")
        if not np.array_equal(np.asarray(d["config"]), self._config()) \
                or tuple(np.asarray(d["action_shape"]).tolist()) != self.action_shape \
                or np.dtype(str(np.asarray(d["action_dtype"]))) != self.action_dtype:
            raise ValueError("replay state was saved by a buffer of another capacity / frame shape / frame_stack / "
                             "features / action spec; build the buffer with the settings it was saved with")
        arrays = {"action": self._action, "reward": self._reward, "terminated": self._terminated,
                  "truncated": self._truncated, "has_next": self._has_next, "t": self._t}
        if self._frames is not None:
            arrays["frames"] = self._frames
        if self._features is not None:
            arrays["features"] = self._features
        for key, dest in arrays.items():
            src = np.asarray(d[key])
            if src.shape != dest.shape:
                raise ValueError(f"replay state {key} has shape {src.shape}, expected {dest.shape}; the file is corrupt")
            dest[...] = src
        total, is_open, added, episodes = (int(x) for x in np.asarray(d["counters"]))
        self._total, self._open, self._transitions_added, self._episodes = total, bool(is_open), added, episodes
