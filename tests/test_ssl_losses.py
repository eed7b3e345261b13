"""SSL losses against naive per-sample references (explicit Python loops), and against lightly where it
implements the same loss."""

from __future__ import annotations

import math

import pytest
import torch

from worldssl.ssl.losses import cpc_info_nce, info_nce, masked_patch_mse, negative_cosine, nt_xent


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / math.sqrt(sum(float(e) ** 2 for e in v))


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return sum(float(x) * float(y) for x, y in zip(a, b))


def _neg_log_softmax(scores: list[float], target: int) -> float:
    top = max(scores)
    return -(scores[target] - top - math.log(sum(math.exp(s - top) for s in scores)))


# -- naive references ------------------------------------------------------------------------------------
def naive_info_nce(q, k, queue, t):
    total = 0.0
    for i in range(len(q)):
        qi = _unit(q[i])
        if queue is not None:
            scores = [_dot(qi, _unit(k[i])) / t] + [_dot(qi, _unit(n)) / t for n in queue]
            total += _neg_log_softmax(scores, 0)
        else:
            scores = [_dot(qi, _unit(kj)) / t for kj in k]
            total += _neg_log_softmax(scores, i)
    return total / len(q)


def naive_nt_xent(z1, z2, t):
    z = [_unit(v) for v in torch.cat([z1, z2])]
    n, b = len(z), len(z1)
    total = 0.0
    for i in range(n):
        pos = (i + b) % n
        others = [j for j in range(n) if j != i]
        scores = [_dot(z[i], z[j]) / t for j in others]
        total += _neg_log_softmax(scores, others.index(pos))
    return total / n


def naive_negative_cosine(p, z):
    return -sum(_dot(_unit(p[i]), _unit(z[i])) for i in range(len(p))) / len(p)


def naive_masked_patch_mse(target, pred, mask, norm_pix):
    num, den = 0.0, 0.0
    for n in range(target.shape[0]):
        for patch in range(target.shape[1]):
            if mask[n, patch] == 0:
                continue
            tgt = [float(v) for v in target[n, patch]]
            if norm_pix:
                mean = sum(tgt) / len(tgt)
                var = sum((v - mean) ** 2 for v in tgt) / (len(tgt) - 1)
                tgt = [(v - mean) / math.sqrt(var + 1e-6) for v in tgt]
            err = sum((float(p) - v) ** 2 for p, v in zip(pred[n, patch], tgt)) / len(tgt)
            num += err
            den += 1
    return num / den


def naive_cpc(pred, z, k, t):
    b_size, steps, _ = z.shape
    flat = [(b, s) for b in range(b_size) for s in range(steps)]
    total, count = 0.0, 0
    for b in range(b_size):
        for s in range(steps - k):
            scores = [_dot(pred[b, s], z[bb, ss]) / t for bb, ss in flat]
            total += _neg_log_softmax(scores, flat.index((b, s + k)))
            count += 1
    return total / count


# -- tests -------------------------------------------------------------------------------------------------
@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


@pytest.mark.parametrize("queue_size", [None, 12])
@pytest.mark.parametrize("temperature", [0.2, 1.0])
def test_info_nce_matches_naive(gen, queue_size, temperature):
    q, k = torch.randn(6, 5, generator=gen), torch.randn(6, 5, generator=gen)
    queue = torch.randn(queue_size, 5, generator=gen) if queue_size else None
    got = info_nce(q, k, queue, temperature)
    assert got.dim() == 0
    assert got.item() == pytest.approx(naive_info_nce(q, k, queue, temperature), rel=1e-5)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_matches_naive(gen, temperature):
    z1, z2 = torch.randn(5, 7, generator=gen), torch.randn(5, 7, generator=gen)
    assert nt_xent(z1, z2, temperature).item() == pytest.approx(naive_nt_xent(z1, z2, temperature), rel=1e-5)


def test_negative_cosine_matches_naive(gen):
    p, z = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)
    assert negative_cosine(p, z).item() == pytest.approx(naive_negative_cosine(p, z), rel=1e-5)
    assert negative_cosine(p, p).item() == pytest.approx(-1.0, abs=1e-6)


@pytest.mark.parametrize("norm_pix", [True, False])
def test_masked_patch_mse_matches_naive(gen, norm_pix):
    target, pred = torch.randn(3, 8, 12, generator=gen), torch.randn(3, 8, 12, generator=gen)
    mask = (torch.rand(3, 8, generator=gen) < 0.6).float()
    mask[0, 0] = 1
    got = masked_patch_mse(target, pred, mask, norm_pix=norm_pix)
    assert got.item() == pytest.approx(naive_masked_patch_mse(target, pred, mask, norm_pix), rel=1e-5)
    # visible patches do not contribute
    pred2 = pred.clone()
    pred2[mask == 0] += 100.0
    assert masked_patch_mse(target, pred2, mask, norm_pix=norm_pix).item() == pytest.approx(got.item(), rel=1e-6)


@pytest.mark.parametrize("k", [1, 3])
def test_cpc_info_nce_matches_naive(gen, k):
    z = torch.randn(3, 5, 6, generator=gen)
    pred = torch.randn(3, 5 - k, 6, generator=gen)
    got = cpc_info_nce(pred, z, k, temperature=0.5)
    assert got.item() == pytest.approx(naive_cpc(pred, z, k, 0.5), rel=1e-5)


def test_losses_run_in_float32_inside_bf16_autocast(gen):
    """Mixed precision speeds up the backbone; the similarity logits and squared errors stay float32."""
    q, k = torch.randn(16, 32, generator=gen), torch.randn(16, 32, generator=gen)
    patches, pred = torch.randn(4, 8, 12, generator=gen), torch.randn(4, 8, 12, generator=gen)
    mask = torch.ones(4, 8)
    seq = torch.randn(2, 5, 6, generator=gen)
    cases = [(info_nce, (q, k, None, 0.1)), (nt_xent, (q, k, 0.1)), (negative_cosine, (q, k)),
             (masked_patch_mse, (patches, pred, mask)), (cpc_info_nce, (seq[:, 1:], seq, 1, 0.1))]
    for fn, args in cases:
        reference = fn(*args)
        bf16_args = tuple(a.bfloat16() if isinstance(a, torch.Tensor) else a for a in args)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = fn(*bf16_args)
        assert got.dtype == torch.float32, fn.__name__
        # only the inputs' rounding to bf16 remains, not bf16 arithmetic in the loss
        exact = fn(*(a.float() if isinstance(a, torch.Tensor) else a for a in bf16_args))
        assert got.item() == pytest.approx(exact.item(), rel=1e-6), fn.__name__
        assert got.item() == pytest.approx(reference.item(), rel=2e-2), fn.__name__


def test_losses_reject_bad_shapes():
    with pytest.raises(ValueError):
        info_nce(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError):
        nt_xent(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError):
        cpc_info_nce(torch.randn(2, 4, 3), torch.randn(2, 4, 3), k=1)


# -- lightly as a second reference -------------------------------------------------------------------------
lightly_loss = pytest.importorskip("lightly.loss")


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_matches_lightly(gen, temperature):
    z1, z2 = torch.randn(8, 16, generator=gen), torch.randn(8, 16, generator=gen)
    ref = lightly_loss.NTXentLoss(temperature=temperature)(z1, z2)
    torch.testing.assert_close(nt_xent(z1, z2, temperature), ref, rtol=1e-5, atol=1e-6)


def test_negative_cosine_and_byol_loss_match_lightly(gen):
    p1, p2, t1, t2 = (torch.randn(8, 16, generator=gen) for _ in range(4))
    crit = lightly_loss.NegativeCosineSimilarity()
    torch.testing.assert_close(negative_cosine(p1, t2), crit(p1, t2))
    # lightly's BYOL example symmetrises as 0.5 * (crit(p0, z1) + crit(p1, z0)), as our BYOL does
    ours = 0.5 * (negative_cosine(p1, t2) + negative_cosine(p2, t1))
    torch.testing.assert_close(ours, 0.5 * (crit(p1, t2) + crit(p2, t1)))


def test_info_nce_with_queue_matches_lightly_memory_bank(gen):
    """lightly's NTXentLoss with a memory bank scores ``[q.k+, q.bank]`` against label 0: MoCo's InfoNCE.

    Its bank stores normalised keys and is read before this batch is enqueued, as our MoCo does."""
    b, d, size, t = 8, 16, 32, 0.2
    q, k = torch.randn(b, d, generator=gen), torch.randn(b, d, generator=gen)
    queue = torch.nn.functional.normalize(torch.randn(size, d, generator=gen), dim=1)
    crit = lightly_loss.NTXentLoss(temperature=t, memory_bank_size=(size, d))
    crit.memory_bank.bank.copy_(queue)
    crit.memory_bank.bank_ptr.zero_()
    torch.testing.assert_close(info_nce(q, k, queue, t), crit(q, k), rtol=1e-5, atol=1e-6)

