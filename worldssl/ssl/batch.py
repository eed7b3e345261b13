"""The batch every SSL objective takes; ``batch_kind`` on the objective says which fields it needs."""

from __future__ import annotations

from typing import NamedTuple

import torch


class SSLBatch(NamedTuple):
    """One SSL batch.

    * ``"frames"``: ``obs`` uint8 ``(B, C, H, W)``.
    * ``"pairs"``: ``obs`` and ``positive`` uint8 ``(B, C, H, W)``, ``positive`` the observation ``k`` steps
      later in the same episode (``EpisodeDataset.sample_transitions(B, k).next_obs``).
    * ``"sequences"``: ``obs`` uint8 ``(B, L+1, C, H, W)`` and ``actions`` ``(B, L, ...)`` (float for
      continuous actions, int64 for discrete ones; ``EpisodeDataset.sample_sequences(B, L)``).
    """

    obs: torch.Tensor
    positive: torch.Tensor | None = None
    actions: torch.Tensor | None = None
