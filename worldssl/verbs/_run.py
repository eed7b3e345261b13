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
