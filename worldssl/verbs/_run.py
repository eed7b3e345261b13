"""What every verb does at the start of a run: find the run dir, save the resolved config."""

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
