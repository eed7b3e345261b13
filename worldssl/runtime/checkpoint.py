"""What every training loop needs to checkpoint and resume: module weights as safetensors, training state that
loads without executing code, RNG capture, a wall-clock budget and SIGTERM handling.

The pretraining, world-model and agent loops all write ``<run>/checkpoints/`` the same way:

* one ``<name>.safetensors`` per module (weights only, loaded strictly, shape-checked);
* ``train_state.pt``: counters, optimiser states, RNG states, plain numbers; ``torch.save`` of tensors and
  builtins only, so it loads with ``torch.load(..., weights_only=True)``.

Every file is written atomically (temp file, fsync, rename), so a kill at any point leaves the previous
checkpoint or the new one, never half of each.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldssl.runtime.errors import CheckpointError
from worldssl.runtime.io import torch_save, write_bytes

TRAIN_STATE = "train_state.pt"


# ------------------------------------------------------------------------------------------------ weights
def module_bytes(module: torch.nn.Module) -> bytes:
    """A module's state dict as safetensors bytes (CPU, contiguous copies)."""
    from safetensors.torch import save as st_save

    return st_save({k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()})


def save_module(module: torch.nn.Module, path: str | Path) -> Path:
    """Write ``module``'s weights to ``path`` (safetensors) atomically."""
    return write_bytes(path, module_bytes(module))


def load_module(module: torch.nn.Module, path: str | Path, device: torch.device | str = "cpu",
                what: str = "model", fix: str = "use the configuration it was trained with") -> None:
    """Load a safetensors file into ``module`` strictly.

    Nothing is loaded unless every key is present with the right shape; otherwise a :class:`CheckpointError`
    names the first missing, unexpected and mis-shaped keys and ``fix``.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; point at a run directory that holds its checkpoints/")
    try:
        tensors = load_file(str(path), device=str(device))
    except Exception as e:  # safetensors raises several types on corrupt files
        raise CheckpointError(f"corrupt checkpoint {path} ({type(e).__name__}: {e}); re-train or restore it") from e
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = sorted(k for k in own if k in tensors and own[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(f"{path} is for another {what}: missing {missing[:3]}, unexpected {unexpected[:3]}, "
                              f"wrong shape {wrong[:3]}; {fix}")
    module.load_state_dict(tensors, strict=True)


# ------------------------------------------------------------------------------------------------ state
def save_train_state(directory: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``directory/train_state.pt`` atomically (tensors, numbers, strings, lists and dicts only)."""
    return torch_save(dict(state), Path(directory) / TRAIN_STATE)


def load_train_state(directory: str | Path, verb: str) -> dict[str, Any]:
    """Read ``directory/train_state.pt`` with ``weights_only=True``; a one-line error if missing or corrupt."""
    path = Path(directory) / TRAIN_STATE
    if not path.is_file():
        raise CheckpointError(f"cannot resume: {path} is missing; point resume= at a `worldssl {verb}` run directory")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickler errors have many types
        raise CheckpointError(f"cannot resume from {directory}: corrupt {TRAIN_STATE} ({type(e).__name__}: {e}); "
                              f"restore it or start a new run") from e


def load_optimizer(optimizer: torch.optim.Optimizer, state: Mapping[str, Any], where: str | Path) -> None:
    """``optimizer.load_state_dict`` with a one-line error when the saved state is for other parameters."""
    try:
        optimizer.load_state_dict(state)
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"cannot resume from {where}: optimizer state does not fit this model ({e}); "
                              f"resume with the same configuration") from e


# ------------------------------------------------------------------------------------------------ RNG
def rng_state(generators: Mapping[str, np.random.Generator] | None = None) -> dict[str, Any]:
    """Python's, numpy's global, torch's (CPU and CUDA) and the named numpy generators' states."""
    return {"python": _encode_python_state(random.getstate()), "numpy_global": _np_state(np.random.get_state()),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "generators": {k: g.bit_generator.state for k, g in (generators or {}).items()}}


def restore_rng(state: Mapping[str, Any], generators: Mapping[str, np.random.Generator] | None = None) -> None:
    """Undo :func:`rng_state` (named generators are restored in place)."""
    random.setstate(_decode_python_state(state["python"]))
    np.random.set_state(_np_state_restore(state["numpy_global"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, g in (generators or {}).items():
        if name in state["generators"]:
            g.bit_generator.state = state["generators"][name]


def _encode_python_state(s: tuple) -> list:
    version, internal, gauss = s
    return [version, torch.tensor(internal, dtype=torch.int64), gauss]


def _decode_python_state(s: list) -> tuple:
    version, internal, gauss = s
    return version, tuple(int(v) for v in internal.tolist()), gauss


# numpy's legacy state holds a uint32 array: kept as an int64 tensor, which weights_only loading accepts
def _np_state(s: tuple) -> list:
    kind, keys, pos, has_gauss, gauss = s
    return [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(gauss)]


def _np_state_restore(s: list) -> tuple:
    kind, keys, pos, has_gauss, gauss = s
    return kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss


# ------------------------------------------------------------------------------------------------ stopping
class Deadline:
    """``max_minutes`` of wall-clock time from construction (None: no limit)."""

    def __init__(self, max_minutes: float | None):
        self.max_minutes = max_minutes
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def expired(self) -> bool:
        return self.max_minutes is not None and self.elapsed > 60.0 * self.max_minutes


class StopOnSignal:
    """Within ``with StopOnSignal() as stop:``, SIGTERM (and SIGINT if asked) sets ``stop.requested`` instead of
    killing the process, so the loop can checkpoint and exit at its next safe point (cluster preemption).

    Outside the main thread signals cannot be caught; the context then does nothing.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
        self.signals = signals
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = signum

    def __enter__(self) -> StopOnSignal:
        for s in self.signals:
            try:
                self._previous[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous.clear()

    def __bool__(self) -> bool:
        return self.requested is not None


class StopWhen:
    """What ends a training loop early, together: the ``max_minutes`` budget (:class:`Deadline`) and SIGTERM
    (:class:`StopOnSignal`). Used as ``with StopWhen(max_minutes) as stop:`` around the loop; after each step
    ``if stop.reason: break``; after the final checkpoint, :meth:`raise_if_signalled` ends the run.
    """

    def __init__(self, max_minutes: float | None, signals: tuple[int, ...] = (signal.SIGTERM,)):
        self.deadline = Deadline(max_minutes)
        self.signal = StopOnSignal(signals)

    def __enter__(self) -> StopWhen:
        self.signal.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.signal.__exit__(*exc)

    @property
    def reason(self) -> str | None:
        """``"SIGTERM"`` (or another caught signal's name), ``"max_minutes"``, or None to go on."""
        if self.signal.requested is not None:
            return signal.Signals(self.signal.requested).name
        return "max_minutes" if self.deadline.expired else None

    def raise_if_signalled(self, where: str, run_dir: str | Path) -> None:
        """Raise :class:`~worldssl.runtime.errors.Interrupted` if a signal stopped the loop (call it after the
        checkpoint is written): ``where`` says how far the run got."""
        from worldssl.runtime.errors import Interrupted

        signum = self.signal.requested
        if signum is not None:
            raise Interrupted(f"stopped by {signal.Signals(signum).name} at {where}; checkpoint written to "
                              f"{Path(run_dir) / 'checkpoints'}; continue with resume={run_dir}", signum)


def restore_train_rng(state: Mapping[str, Any], generators: Mapping[str, np.random.Generator] | None = None) -> None:
    """Restore the RNG states of a train state: ``state["rng"]`` from :func:`rng_state`, or the per-key layout of
    checkpoints written before it (``torch_rng``, ``cuda_rng``, ``numpy_rng`` for the one generator)."""
    if "rng" in state:
        restore_rng(state["rng"], generators)
        return
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    if "numpy_rng" in state and generators:
        next(iter(generators.values())).bit_generator.state = state["numpy_rng"]
