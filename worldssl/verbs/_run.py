"""What every verb does at the start of a run (find the run dir, save the resolved config) and how verbs name
what they report (:func:`probe_key`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worldssl.runtime.io import atomic_open


def run_dir() -> Path:
    """The hydra run directory of the current job (or the cwd outside hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path.cwd()


def save_config(cfg: Any, directory: Path) -> None:
    from omegaconf import OmegaConf

    with atomic_open(directory / "config.yaml", "w") as f:
        f.write(OmegaConf.to_yaml(cfg, resolve=True))


def probe_key(name: str) -> str:
    """The metric-key form of a probe result's name: ``"random init"`` -> ``random_init``, as every verb writes
    ``probe/<key>/ridge_r2`` and ``probe/<key>/knn_r2`` to summary.json and the logs."""
    return name.strip().replace(" ", "_")


def probe_summary(results: Any) -> dict[str, float]:
    """``probe/<key>/ridge_r2`` and ``probe/<key>/knn_r2`` of each probe result (see :func:`probe_key`)."""
    out: dict[str, float] = {}
    for r in results:
        out[f"probe/{probe_key(r.name)}/ridge_r2"] = r.r2_ridge
        out[f"probe/{probe_key(r.name)}/knn_r2"] = r.r2_knn
    return out


def finished_summary(directory: Path) -> dict[str, Any] | None:
    """The summary.json of a run that ended (its budget spent or reached), or None: no summary, or the summary a
    run stopped by a signal wrote before exiting (``stopped_by: sigterm``), which is resumed, not reused."""
    import json

    path = Path(directory) / "summary.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return None if summary.get("stopped_by") == "sigterm" else summary


def resolve_auto_resume(cfg: Any, verb: str) -> dict[str, Any] | None:
    """``resume=auto``, what sweep jobs run with: the job's own run directory (deterministic, named after the
    swept values) is continued when it holds a checkpoint, and a run that finished there is not run again.
    Returns that run's summary when it finished (the caller returns it); otherwise sets ``cfg.resume`` to the
    directory (a checkpoint is there) or None (a fresh run) and returns None."""
    if cfg.get("resume") != "auto":
        return None
    directory = run_dir()
    done = finished_summary(directory)
    if done is not None:
        print(f"{verb}: {directory} finished earlier (summary.json); not run again")
        return done
    has_checkpoint = (directory / "checkpoints" / "train_state.pt").is_file()
    cfg.resume = str(directory) if has_checkpoint else None
    if has_checkpoint:
        print(f"{verb}: resuming {directory} from its checkpoint")
    return None
