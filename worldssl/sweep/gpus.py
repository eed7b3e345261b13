"""One GPU per job where a machine has several, with the matching EGL device for MuJoCo rendering.

A hydra launcher starts jobs as processes (joblib's workers, submitit's tasks, Slurm's job steps) but says
nothing about GPUs: on a 4-GPU machine, four joblib workers would all train on ``cuda:0``. Every job therefore
claims a GPU when it starts (:func:`claim_gpu`, called by the CLI before a verb runs):

- a scheduler that already confined the job (Slurm or submitit set ``CUDA_VISIBLE_DEVICES`` to its GPUs) leaves
  one visible GPU, which is used;
- several tasks of one Slurm job sharing the node's GPUs take GPU ``SLURM_LOCALID mod count``;
- otherwise (joblib workers, separate commands) the job takes the first GPU nobody holds, by a non-blocking
  ``flock`` on ``<tmp>/worldssl-gpus-<uid>/gpu-<id>.lock``, held until the process exits, so a reused joblib worker
  keeps its GPU and a finished worker frees it; with every GPU held, jobs share them by job number.

``MUJOCO_EGL_DEVICE_ID`` is set to the physical id of the chosen GPU (the ``CUDA_VISIBLE_DEVICES`` entry: MuJoCo's
EGL numbers devices physically, and dm_control checks the id against that list), so rendering happens on the GPU
that trains. dm_control opens its EGL display when it is first imported, so the claim comes first: a job of
joblib or submitit claims in its fresh process before the verb imports anything that renders, and a single run
claims before the CLI's preflight (which imports the env). Without CUDA nothing happens. :func:`choose_gpu` is the
decision alone, testable without a GPU.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO

_HELD: list[IO[str]] = []  # lock files kept open for the life of the process
_CLAIMED: GpuChoice | None = None


@dataclasses.dataclass(frozen=True)
class GpuChoice:
    index: int               # torch's index among the visible devices: the job trains on cuda:<index>
    egl_device: str | None   # MUJOCO_EGL_DEVICE_ID (the physical id), None where CUDA_VISIBLE_DEVICES holds UUIDs
    why: str


def default_lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"worldssl-gpus-{os.getuid()}"


def visible_ids(env: Mapping[str, str], count: int) -> list[str]:
    """The physical ids of the ``count`` GPUs this process sees (``CUDA_VISIBLE_DEVICES`` order)."""
    if "CUDA_VISIBLE_DEVICES" in env:
        ids = [v.strip() for v in env["CUDA_VISIBLE_DEVICES"].split(",") if v.strip()]
        return ids[:count]
    return [str(i) for i in range(count)]


def choose_gpu(count: int, env: Mapping[str, str], lock_dir: Path | None = None,
               job_num: int | None = None) -> GpuChoice | None:
    """Which of ``count`` visible GPUs this job takes (None without any); locks are held by this process."""
    if count < 1:
        return None
    ids = visible_ids(env, count)
    if count == 1:
        index, why = 0, "the one visible GPU"
    elif env.get("SLURM_LOCALID", "").isdigit():
        index, why = int(env["SLURM_LOCALID"]) % count, f"SLURM_LOCALID {env['SLURM_LOCALID']}"
    else:
        index = _lock_first_free(ids, lock_dir or default_lock_dir())
        why = "the first GPU no other job holds"
        if index is None:
            index, why = (job_num or 0) % count, "every GPU held by another job: shared by job number"
    egl = ids[index] if index < len(ids) and ids[index].isdigit() else None
    return GpuChoice(index, egl, why)


def _lock_first_free(ids: list[str], lock_dir: Path) -> int | None:
    lock_dir.mkdir(parents=True, exist_ok=True)
    for i, gpu in enumerate(ids):
        f = open(lock_dir / f"gpu-{gpu}.lock", "a")  # noqa: SIM115  (kept open: the lock lives with the process)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        _HELD.append(f)
        return i
    return None


def claim_gpu(env: dict[str, str] | None = None) -> GpuChoice | None:
    """Choose this process's GPU once (see the module doc), make it torch's current device and MuJoCo's EGL
    device; None (and nothing changed) without CUDA."""
    global _CLAIMED
    if _CLAIMED is not None:
        return _CLAIMED
    import torch

    if not torch.cuda.is_available():
        return None
    env = os.environ if env is None else env
    choice = choose_gpu(torch.cuda.device_count(), env, job_num=_job_num())
    if choice is None:
        return None
    torch.cuda.set_device(choice.index)
    if choice.egl_device is not None:
        env["MUJOCO_EGL_DEVICE_ID"] = choice.egl_device
    _CLAIMED = choice
    return choice


def _job_num() -> int | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        return int(HydraConfig.get().job.num) if HydraConfig.initialized() else None
    except (ValueError, TypeError, AttributeError):
        return None
