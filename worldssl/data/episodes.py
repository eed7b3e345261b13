"""Episode files on disk and the reader over them.

Layout of a dataset directory::

    manifest.json          env id and kwargs, observation / action / state spec, seed, counts
    episodes/ep_000000.npz one uncompressed .npz per episode, written atomically

Each episode stores every frame once (``obs``: ``(T+1, C, H, W)`` uint8, single frames, no stacking),
``action`` ``(T, ...)``, ``reward`` ``(T,)``, ``terminated`` / ``truncated`` ``(T,)`` and, where the env has
one, the true low-dimensional ``state`` ``(T+1, S)``. No pickle: ``np.load(..., allow_pickle=False)``
reads every array. Frame stacks are rebuilt at read time exactly as ``envs.wrappers.FrameStack`` builds
them online (the first frame repeated at the start of an episode).

Because the ``.npz`` members are stored uncompressed, the reader locates ``obs`` inside the zip file and
reads frames straight from it: ``load="memory"`` copies every frame into one contiguous uint8 array (1 byte
per pixel, each frame once) for fast vectorised sampling; ``load="mmap"`` memory-maps the frames (they count
toward the process's resident memory once touched); ``load="stream"`` reads each batch's frames from the
files with plain reads, so the process holds no frames at all and the OS page cache does the caching.
"""

from __future__ import annotations

import re
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from worldssl.runtime.errors import DataError
from worldssl.runtime.io import atomic_open, write_json

FORMAT = "worldssl-episodes"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
EPISODE_DIR = "episodes"
_EPISODE_RE = re.compile(r"^ep_(\d{6,})\.npz$")
_REQUIRED = ("obs", "action", "reward", "terminated", "truncated")


def episode_path(root: str | Path, index: int) -> Path:
    return Path(root) / EPISODE_DIR / f"ep_{index:06d}.npz"


def write_episode(root: str | Path, index: int, arrays: dict[str, np.ndarray]) -> Path:
    """Validate and atomically write one episode; returns its path."""
    obs = arrays["obs"]
    if obs.dtype != np.uint8 or obs.ndim != 4:
        raise ValueError(f"obs must be uint8 (T+1, C, H, W), got {obs.dtype} {obs.shape}")
    steps = len(arrays["action"])
    if len(obs) != steps + 1:
        raise ValueError(f"obs has {len(obs)} frames for {steps} actions; expected {steps + 1}")
    for key in ("reward", "terminated", "truncated"):
        if len(arrays[key]) != steps:
            raise ValueError(f"{key} has length {len(arrays[key])}, expected {steps}")
    path = episode_path(root, index)
    with atomic_open(path, "wb") as f:
        np.savez(f, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
    return path


def list_episode_files(root: str | Path) -> dict[int, Path]:
    """Episode index -> path for every finished episode file (temp files of a killed writer are ignored)."""
    folder = Path(root) / EPISODE_DIR
    if not folder.is_dir():
        return {}
    found = {}
    for p in folder.iterdir():
        m = _EPISODE_RE.match(p.name)
        if m:
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def read_manifest(root: str | Path) -> dict[str, Any]:
    import json

    root = Path(root)
    if not root.exists():
        raise DataError(f"dataset directory {root} does not exist; create it with `worldssl collect out={root}`")
    path = root / MANIFEST
    if not path.is_file():
        raise DataError(f"{root} is not a worldssl dataset (no {MANIFEST}); point data= at a `worldssl collect` output")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"corrupt manifest {path}: {e}; restore it or re-collect into a new directory") from e
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path} is not a {FORMAT} manifest (format={manifest.get('format')!r})")
    if int(manifest.get("version", 0)) > FORMAT_VERSION:
        raise DataError(f"{path} has format version {manifest['version']}, newer than this worldssl "
                        f"({FORMAT_VERSION}); upgrade worldssl")
    return manifest


def write_manifest(root: str | Path, manifest: dict[str, Any]) -> None:
    write_json(Path(root) / MANIFEST, {"format": FORMAT, "version": FORMAT_VERSION, **manifest})


class _Member(NamedTuple):
    offset: int  # byte offset of the array data inside the .npz file
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool


def _npz_members(path: Path) -> dict[str, _Member]:
    """Locate each array of an uncompressed .npz, so it can be memory-mapped without reading it."""
    members = {}
    with open(path, "rb") as raw, zipfile.ZipFile(raw) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"member {info.filename} is compressed")
            raw.seek(info.header_offset)
            header = raw.read(30)
            if header[:4] != b"PK\x03\x04":
                raise ValueError(f"bad local header for {info.filename}")
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            raw.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(raw)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(raw)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(raw)
            if dtype.hasobject:
                raise ValueError(f"member {info.filename} holds Python objects (pickle); refused")
            start = raw.tell()
            if start + int(np.prod(shape)) * dtype.itemsize > info.header_offset + 30 + name_len + extra_len + info.file_size:
                raise ValueError(f"member {info.filename} is truncated")
            members[info.filename[:-4]] = _Member(start, tuple(shape), dtype, fortran)
    return members


class _FrameFile:
    """The ``obs`` array of one episode file, located but not read: ``(T+1, C, H, W)`` uint8 at ``offset``."""

    __slots__ = ("offset", "path", "shape")

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...]):
        self.path, self.offset, self.shape = path, int(offset), shape

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def frame_bytes(self) -> int:
        return int(np.prod(self.shape[1:]))

    def read(self, t: np.ndarray) -> np.ndarray:
        """Frames ``t`` (any order, repeats allowed), read with one open and one read per distinct frame."""
        n = self.frame_bytes
        out = np.empty((len(t), *self.shape[1:]), dtype=np.uint8)
        with open(self.path, "rb", buffering=0) as f:
            for i, s in enumerate(np.asarray(t, np.int64)):
                f.seek(self.offset + int(s) * n)
                if f.readinto(memoryview(out[i]).cast("B")) != n:
                    raise DataError(f"episode file {self.path} is truncated; delete it and re-run collect")
        return out

    def read_all(self) -> np.ndarray:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = np.fromfile(f, dtype=np.uint8, count=len(self) * self.frame_bytes)
        if data.size != len(self) * self.frame_bytes:
            raise DataError(f"episode file {self.path} is truncated; delete it and re-run collect")
        return data.reshape(self.shape)

    def memmap(self) -> np.memmap:
        return np.memmap(self.path, dtype=np.uint8, mode="r", offset=self.offset, shape=self.shape)


class Episode(NamedTuple):
    """One whole episode. ``obs`` is stacked to the dataset's ``frame_stack``: ``(T+1, k*C, H, W)``."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    states: np.ndarray | None


class Transitions(NamedTuple):
    """A batch of ``(o_t, a_t..a_{t+k-1}, o_{t+k})``; ``actions`` ``(B, k, ...)``, ``rewards`` ``(B, k)``."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    states: np.ndarray | None
    next_states: np.ndarray | None
    episode: np.ndarray
    t: np.ndarray


class Sequences(NamedTuple):
    """A batch of fixed-length windows: ``obs`` ``(B, L+1, k*C, H, W)``, ``actions`` ``(B, L, ...)``."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    states: np.ndarray | None
    episode: np.ndarray
    t: np.ndarray


class EpisodeDataset:
    """Read a dataset written by ``worldssl collect`` (or :func:`write_episode`).

    Args:
        root: the dataset directory.
        frame_stack: frames per observation; ``None`` takes the manifest's (the env's default).
        load: ``"memory"`` copies all frames into one contiguous uint8 array; ``"mmap"`` maps them lazily
            from disk (datasets larger than RAM); ``"stream"`` reads each batch's frames from the files and
            holds none; ``"auto"`` picks memory below ``max_memory_bytes``, else mmap.
        skip_corrupt: skip unreadable episode files with a warning instead of raising.
        expect_env: if given, raise unless the dataset was collected from this env id.
    """

    def __init__(self, root: str | Path, frame_stack: int | None = None, load: str = "auto",
                 skip_corrupt: bool = False, expect_env: str | None = None,
                 max_memory_bytes: int = 4 << 30):
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        if expect_env is not None and self.manifest["env_id"] != expect_env:
            raise DataError(f"dataset {self.root} was collected from {self.manifest['env_id']}, not {expect_env}; "
                            f"collect one for {expect_env} or point data= at the right directory")
        if load not in ("auto", "memory", "mmap", "stream"):
            raise ValueError(f"load must be auto, memory, mmap or stream, got {load!r}")
        self.load = load
        self.frame_stack = int(frame_stack or self.manifest.get("frame_stack", 1))
        self.frame_shape = tuple(self.manifest["frame_shape"])
        self.skipped: list[Path] = []
        self._open_episodes(skip_corrupt)
        total = int(sum(len(o) for o in self._obs)) * int(np.prod(self.frame_shape))
        self.in_memory = load == "memory" or (load == "auto" and total <= max_memory_bytes)
        self.streaming = load == "stream"
        if self.in_memory:
            self._to_memory()
        elif not self.streaming:
            self._obs = [f.memmap() for f in self._obs]

    # ------------------------------------------------------------------ opening
    def _open_episodes(self, skip_corrupt: bool) -> None:
        files = list_episode_files(self.root)
        if not files:
            raise DataError(f"dataset {self.root} has no episode files; run `worldssl collect out={self.root}`")
        self.indices: list[int] = []
        self._obs: list[Any] = []  # _FrameFile per episode; then memmaps or views of one array
        self._small: list[dict[str, np.ndarray]] = []
        for index, path in files.items():
            try:
                obs, small = self._open_one(path)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
                if not skip_corrupt:
                    raise DataError(f"corrupt episode file {path}: {e}; delete it (re-running collect rewrites it) "
                                    f"or pass skip_corrupt=true") from e
                warnings.warn(f"skipping corrupt episode file {path}: {e}", stacklevel=3)
                self.skipped.append(path)
                continue
            self.indices.append(index)
            self._obs.append(obs)
            self._small.append(small)
        if not self._obs:
            raise DataError(f"every episode file in {self.root} is corrupt; re-collect the dataset")
        self.lengths = np.array([len(s["action"]) for s in self._small], dtype=np.int64)
        self.has_state = all("state" in s for s in self._small)
        self._frame_start = np.concatenate([[0], np.cumsum(self.lengths + 1)[:-1]]).astype(np.int64)

    def _open_one(self, path: Path) -> tuple[_FrameFile, dict[str, np.ndarray]]:
        members = _npz_members(path)
        missing = [k for k in _REQUIRED if k not in members]
        if missing:
            raise KeyError(f"missing arrays {missing}")
        m = members["obs"]
        if m.dtype != np.uint8 or tuple(m.shape[1:]) != self.frame_shape:
            raise ValueError(f"obs is {m.dtype} {m.shape}, manifest says uint8 (T+1, {self.frame_shape})")
        if m.fortran:
            raise ValueError("obs is stored in Fortran order; rewrite the episode with write_episode")
        obs = _FrameFile(path, m.offset, tuple(m.shape))
        with np.load(path, allow_pickle=False) as z:
            small = {k: z[k] for k in members if k != "obs"}
        steps = len(small["action"])
        if len(obs) != steps + 1 or any(len(small[k]) != steps for k in ("reward", "terminated", "truncated")):
            raise ValueError(f"inconsistent lengths: {len(obs)} frames, {steps} actions")
        if "state" in small and len(small["state"]) != steps + 1:
            raise ValueError(f"state has {len(small['state'])} rows for {steps + 1} frames")
        return obs, small

    def _to_memory(self) -> None:
        frames = np.empty((int(self.lengths.sum() + len(self.lengths)), *self.frame_shape), dtype=np.uint8)
        for start, obs in zip(self._frame_start, self._obs):
            frames[start:start + len(obs)] = obs.read_all()
        self._frames = frames
        self._obs = [frames[s:s + n + 1] for s, n in zip(self._frame_start, self.lengths)]

    # ------------------------------------------------------------------ sizes
    @property
    def num_episodes(self) -> int:
        return len(self._obs)

    @property
    def num_transitions(self) -> int:
        return int(self.lengths.sum())

    @property
    def num_frames(self) -> int:
        return int(self.lengths.sum() + len(self.lengths))

    @property
    def obs_shape(self) -> tuple[int, ...]:
        c, h, w = self.frame_shape
        return (c * self.frame_stack, h, w)

    def nbytes(self) -> int:
        """Bytes held for frames, actions, rewards, flags and states (what loading the dataset costs)."""
        frames = self.num_frames * int(np.prod(self.frame_shape))
        return frames + sum(v.nbytes for s in self._small for v in s.values())

    def __len__(self) -> int:
        return self.num_episodes

    def __repr__(self) -> str:
        return (f"EpisodeDataset({str(self.root)!r}, env={self.manifest['env_id']}, episodes={self.num_episodes}, "
                f"transitions={self.num_transitions}, obs={self.obs_shape}, in_memory={self.in_memory})")

    # ------------------------------------------------------------------ reading
    def frames(self, episode: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Stacked observations at time ``t`` of episodes ``episode`` (arrays of equal length)."""
        episode, t = np.asarray(episode, np.int64), np.asarray(t, np.int64)
        k = self.frame_stack
        parts = []
        for back in range(k - 1, -1, -1):  # oldest frame first, as FrameStack orders them
            parts.append(self._single_frames(episode, np.maximum(t - back, 0)))
        return parts[0] if k == 1 else np.concatenate(parts, axis=1)

    def _single_frames(self, episode: np.ndarray, t: np.ndarray) -> np.ndarray:
        if self.in_memory:
            return self._frames[self._frame_start[episode] + t]
        out = np.empty((len(t), *self.frame_shape), dtype=np.uint8)
        if self.streaming:  # one open per episode of the batch
            order = np.argsort(episode, kind="stable")
            bounds = np.flatnonzero(np.diff(episode[order])) + 1
            for group in np.split(order, bounds):
                out[group] = self._obs[episode[group[0]]].read(t[group])
            return out
        for i, (e, s) in enumerate(zip(episode, t)):
            out[i] = self._obs[e][s]
        return out

    def _small_at(self, key: str, episode: np.ndarray, t: np.ndarray) -> np.ndarray:
        return np.stack([self._small[e][key][s] for e, s in zip(episode, t)])

    def episode(self, i: int) -> Episode:
        """The ``i``-th episode (in file order), whole."""
        n = int(self.lengths[i])
        ep, t = np.full(n + 1, i), np.arange(n + 1)
        s = self._small[i]
        return Episode(self.frames(ep, t), s["action"].copy(), s["reward"].copy(), s["terminated"].copy(),
                       s["truncated"].copy(), s["state"].copy() if "state" in s else None)

    def _starts(self, span: int) -> np.ndarray:
        """Number of valid start times per episode for windows covering ``span`` steps."""
        return np.maximum(self.lengths - span + 1, 0)

    def _sample_starts(self, batch_size: int, span: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        counts = self._starts(span)
        total = int(counts.sum())
        if total == 0:
            raise DataError(f"no episode in {self.root} has {span} steps (longest: {int(self.lengths.max())}); "
                            f"ask for fewer steps or collect longer episodes")
        flat = rng.integers(0, total, size=batch_size)
        cum = np.cumsum(counts)
        episode = np.searchsorted(cum, flat, side="right")
        t = flat - (cum[episode] - counts[episode])
        return episode, t

    def sample_transitions(self, batch_size: int, k: int = 1, rng: np.random.Generator | None = None) -> Transitions:
        """Uniform random ``(o_t, a_t..a_{t+k-1}, o_{t+k})`` within episodes."""
        rng = rng if rng is not None else np.random.default_rng()
        episode, t = self._sample_starts(batch_size, k, rng)
        steps = t[:, None] + np.arange(k)[None]
        actions = np.stack([self._small[e]["action"][s] for e, s in zip(episode, steps)])
        rewards = np.stack([self._small[e]["reward"][s] for e, s in zip(episode, steps)])
        states = next_states = None
        if self.has_state:
            states = self._small_at("state", episode, t)
            next_states = self._small_at("state", episode, t + k)
        return Transitions(self.frames(episode, t), actions, rewards, self.frames(episode, t + k), states,
                           next_states, episode, t)

    def sample_sequences(self, batch_size: int, length: int, rng: np.random.Generator | None = None) -> Sequences:
        """Uniform random windows of ``length`` steps (``length + 1`` observations) within episodes."""
        rng = rng if rng is not None else np.random.default_rng()
        episode, t = self._sample_starts(batch_size, length, rng)
        return self.windows(episode, t, length)

    def window_starts(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Every ``(episode, t)`` at which a window of ``length`` steps fits, episode-major (an epoch's items)."""
        counts = self._starts(length)
        episode = np.repeat(np.arange(self.num_episodes), counts)
        first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        t = np.arange(int(counts.sum()), dtype=np.int64) - np.repeat(first, counts)
        return episode, t

    def windows(self, episode: np.ndarray, t: np.ndarray, length: int) -> Sequences:
        """Windows of ``length`` steps starting at ``(episode[i], t[i])``: ``obs`` ``(B, length+1, ...)``."""
        episode, t = np.asarray(episode, np.int64), np.asarray(t, np.int64)
        if len(episode) and np.any(t + length > self.lengths[episode]):
            raise DataError(f"a window of {length} steps does not fit every requested start in {self.root}")
        b = len(episode)
        steps = t[:, None] + np.arange(length + 1)[None]
        obs = self.frames(np.repeat(episode, length + 1), steps.ravel())
        obs = obs.reshape(b, length + 1, *obs.shape[1:])
        flat = (self._step_start[episode][:, None] + steps[:, :-1])  # rows of the concatenated step arrays
        acts, rews, term = (self._flat(k)[flat] for k in ("action", "reward", "terminated"))
        states = self._flat("state")[self._state_start[episode][:, None] + steps] if self.has_state else None
        return Sequences(obs, acts, rews, term, states, episode, t)

    def _flat(self, key: str) -> np.ndarray:
        """Per-episode ``key`` arrays concatenated once (cached) for vectorised gathers (``state`` rows line up
        with ``_state_start``, the step arrays with ``_step_start``)."""
        cache = self.__dict__.setdefault("_flat_cache", {})
        if key not in cache:
            cache[key] = np.concatenate([s[key] for s in self._small])
        return cache[key]

    @property
    def _step_start(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    @property
    def _state_start(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths + 1)[:-1]]).astype(np.int64)

    def subset(self, episodes: np.ndarray | list[int]) -> EpisodeDataset:
        """A view of some episodes (positions in file order), sharing frames with this dataset."""
        import copy

        episodes = np.asarray(episodes, np.int64)
        if len(episodes) == 0 or episodes.min() < 0 or episodes.max() >= self.num_episodes:
            raise ValueError(f"subset needs episode positions in [0, {self.num_episodes}), got {episodes!r}")
        view = copy.copy(self)
        view.__dict__.pop("_flat_cache", None)
        view.indices = [self.indices[i] for i in episodes]
        view._obs = [self._obs[i] for i in episodes]
        view._small = [self._small[i] for i in episodes]
        view.lengths = self.lengths[episodes]
        view._frame_start = self._frame_start[episodes]  # still offsets into the shared in-memory frames
        return view

    def iter_episodes(self):
        for i in range(self.num_episodes):
            yield self.episode(i)

