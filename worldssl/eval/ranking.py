"""C-SWM's latent ranking evaluation (Kipf et al., ICLR 2020, sec. 4): Hits@k and MRR of multi-step predictions.

For every eval episode, ``obs[0]`` is encoded, the transition model is applied ``k`` times with the logged
actions, and ``obs[k]`` is encoded as the target. Each target ranks all ``N`` predictions of the eval set by
squared Euclidean distance over the flattened latent; the right one is the prediction from the same episode.
Ties count in favour of the right answer: ``rank = 1 + #(candidates strictly closer than the right one)``.
Scores are in percent, as in the paper's Table 1; the pool size is reported with them because duplicate
states and the size of the pool move the scores.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

# distances held at once by one block of query rows (rows x pool)
_BLOCK_ELEMENTS = 1 << 24


def ranks(pred: torch.Tensor, target: torch.Tensor, query: str = "target") -> torch.Tensor:
    """1-based rank of the right match for each of the ``N`` rows, int64 ``(N,)``.

    ``query="target"`` (C-SWM's code and paper): target ``i`` ranks all predictions, the right one is
    prediction ``i``. ``query="prediction"``: prediction ``i`` ranks all targets, the right one is target ``i``.
    Distances are Euclidean over the flattened latents (ranking by them is ranking by squared distance),
    computed from per-pair differences (``torch.cdist`` without the ``|x|^2 + |y|^2 - 2xy`` expansion) so
    duplicate rows tie exactly; the right match's distance is read from the same matrix, so it never counts
    as closer than itself. Blocks of query rows bound the memory (about ``2^24`` distances at a time).
    """
    if pred.shape != target.shape or pred.dim() < 1:
        raise ValueError(f"pred and target must have the same shape (N, ...), got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    if query not in ("target", "prediction"):
        raise ValueError(f"query must be 'target' or 'prediction', got {query!r}")
    n = pred.shape[0]
    dtype = torch.promote_types(torch.promote_types(pred.dtype, target.dtype), torch.float32)
    pred, target = pred.reshape(n, -1).to(dtype), target.reshape(n, -1).to(dtype)
    queries, pool = (target, pred) if query == "target" else (pred, target)
    block = max(1, _BLOCK_ELEMENTS // max(1, n))
    out = torch.empty(n, dtype=torch.long, device=pred.device)
    for start in range(0, n, block):
        stop = min(n, start + block)
        dist = torch.cdist(queries[start:stop], pool, compute_mode="donot_use_mm_for_euclid_dist")  # [b, N]
        rows = torch.arange(stop - start, device=pred.device)
        right = dist[rows, rows + start]  # [b]: each query's distance to its own match
        out[start:stop] = 1 + (dist < right[:, None]).sum(1)
    return out


def ranking_metrics(pred: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1,),
                    query: str = "target") -> dict[str, float]:
    """Hits@k and MRR in percent over a pool of all ``N`` rows: ``{"hits@1": ..., "mrr": ..., "pool": N}``.

    ``pred[i]`` and ``target[i]`` are the matching pair; see :func:`ranks` for distances, ties and ``query``.
    """
    r = ranks(pred, target, query=query).double()
    out = {f"hits@{k}": float((r <= k).double().mean() * 100.0) for k in ks}
    out["mrr"] = float((1.0 / r).mean() * 100.0)
    out["pool"] = int(r.numel())
    return out


@torch.no_grad()
def evaluate_ranking(model: torch.nn.Module, dataset, steps: Sequence[int] = (1, 5, 10), batch_size: int = 256,
                     device: str | torch.device = "cpu", ks: Sequence[int] = (1,),
                     query: str = "target") -> dict[str, float]:
    """C-SWM's ranking protocol on every episode of ``dataset`` (an :class:`~worldssl.data.EpisodeDataset`).

    For each ``k`` in ``steps``, every episode with at least ``k`` steps contributes one pair
    ``(rollout(encode(obs[0]), actions[:k])[k-1], encode(obs[k]))``; shorter episodes are skipped for that
    ``k``. Episodes are read, moved to ``device`` and encoded ``batch_size`` at a time, frames staying uint8
    until the encoder; only the latents of the whole set are kept (on the CPU). ``model`` must already be on
    ``device``; it runs in eval mode (its mode is restored afterwards).

    Returns:
        ``{"hits@1/1": %, "mrr/1": %, "pool/1": N_1, "hits@1/5": ..., ...}``: Hits@k and MRR in percent and
        the pool size, per number of steps. A ``k`` no episode is long enough for is left out.
    """
    steps = sorted({int(k) for k in steps})
    if not steps or steps[0] < 1:
        raise ValueError(f"steps must be integers >= 1, got {steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    preds: dict[int, list[torch.Tensor]] = {k: [] for k in steps}
    targets: dict[int, list[torch.Tensor]] = {k: [] for k in steps}
    was_training = model.training
    model.eval()
    try:
        for k, pred, frames in rollouts(model, dataset, steps, batch_size, device):
            targets[k].append(model.encode(frames).float().cpu())
            preds[k].append(pred.float().cpu())
    finally:
        model.train(was_training)
    out: dict[str, float] = {}
    for k in steps:
        if not preds[k]:
            continue
        metrics = ranking_metrics(torch.cat(preds[k]), torch.cat(targets[k]), ks=ks, query=query)
        for name, value in metrics.items():
            out[f"{name}/{k}"] = value
    return out


def rollouts(model, dataset, steps: Sequence[int], batch_size: int, device,
             max_episodes: int | None = None) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """The ``k``-step predictions of every episode at least ``k`` long, ``batch_size`` episodes at a time.

    Yields ``(k, pred, frames)``: ``pred`` the latents ``rollout(encode(obs[0]), actions[:k])[k-1]`` of the
    chunk's long-enough episodes, and ``frames`` their true ``obs[k]`` (uint8, on ``device``). Episodes (the
    first ``max_episodes``, or all) are read long ones first, so a chunk shares one rollout length; shorter
    episodes are padded with zero actions, and their rollouts past their own length are never read. The
    caller sets the model's mode and grad mode.
    """
    steps = sorted({int(k) for k in steps})
    lengths = np.asarray([int(n) for n in dataset.lengths])
    if max_episodes is not None:
        lengths = lengths[:max(0, int(max_episodes))]
    order = np.argsort(-lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        horizon = min(steps[-1], int(lengths[chunk].max()))
        if horizon < 1:  # only empty episodes in this chunk
            continue
        episodes = [dataset.episode(int(i)) for i in chunk]
        ep_len = np.asarray([len(ep.actions) for ep in episodes])
        acts = np.stack([pad_actions(ep.actions[:horizon], horizon) for ep in episodes])
        z = model.encode(torch.from_numpy(np.stack([ep.obs[0] for ep in episodes])).to(device))
        rolled = model.rollout(z, torch.from_numpy(acts).to(device))  # [b, horizon, (K,) D]
        for k in steps:
            keep = np.flatnonzero(ep_len >= k)
            if k > horizon or not len(keep):
                continue
            frames = torch.from_numpy(np.stack([episodes[i].obs[k] for i in keep])).to(device)
            yield k, rolled[torch.from_numpy(keep).to(device), k - 1], frames


def pad_actions(actions: np.ndarray, length: int) -> np.ndarray:
    """``actions`` extended with zero rows to ``length`` rows."""
    missing = length - len(actions)
    if missing <= 0:
        return actions
    return np.concatenate([actions, np.zeros((missing, *actions.shape[1:]), dtype=actions.dtype)])
