"""``worldssl bench ssl`` on a tiny setting: every row gets our rate, lightly's rate and their ratio."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from worldssl.bench import ssl as bench_ssl
from worldssl.runtime.errors import ConfigError
from worldssl.verbs.bench import BENCHES

pytest.importorskip("lightly")

TINY = {"repeats": 1, "ssl_max_repeats": 0, "ssl_steps": 1, "ssl_warmup": 1, "ssl_batch": 8, "ssl_image_size": 32,
        "ssl_backbones": ["conv", "vit_tiny"], "ssl_objectives": ["simclr", "mae"], "ssl_vit_depth": 1,
        "device": "cpu", "amp": False}


def test_tiny_run_reports_ours_lightly_and_ratio(capsys):
    rows = bench_ssl.run(OmegaConf.create(TINY))
    assert [r.name for r in rows] == ["simclr / conv 9x32x32 b8", "simclr / vit_tiny 9x32x32 b8",
                                      "mae / vit_tiny 9x32x32 b8"]  # no MAE on the conv backbone
    for r in rows:
        assert r.figure == "train images/s" and r.target == ">= 1.0x"
        assert r.ours > 0 and r.baseline is not None and r.baseline > 0 and r.ratio is not None
        assert r.baseline_name.startswith("lightly ")
    out = capsys.readouterr().out
    assert "bench ssl:" in out and out.count("vs lightly") == 3


def test_bf16_cpu_adds_an_equal_precision_row(monkeypatch, capsys):
    """Where ours runs bf16 on the CPU (AMX) and lightly's plain loop float32, ours is also timed in float32."""
    monkeypatch.setattr(bench_ssl, "mixed_precision_differs", lambda device, amp: True)
    rows = bench_ssl.run(OmegaConf.create({**TINY, "amp": "auto", "ssl_backbones": ["conv"],
                                           "ssl_objectives": ["simclr"]}))
    assert [r.name for r in rows] == ["simclr / conv 9x32x32 b8", "simclr / conv 9x32x32 b8 (ours in float32 too)"]
    assert rows[0].target == ">= 1.0x" and rows[1].target == ""
    assert rows[1].ours > 0 and rows[1].baseline == rows[0].baseline
    assert "ours in float32 like lightly" in capsys.readouterr().out


def test_cpc_row_has_no_baseline_and_comparable_images():
    cfg = OmegaConf.create({**TINY, "ssl_backbones": ["conv"], "ssl_objectives": ["cpc"],
                            "ssl_sequence_length": 4})
    (row,) = bench_ssl.run(cfg)
    assert row.name == "cpc / conv 9x32x32 b8 (2 seq x 4)"
    assert row.ours > 0 and row.baseline is None and row.ratio is None


@pytest.mark.parametrize("override, message", [
    ({"ssl_objectives": ["swav"]}, "unknown ssl_objectives"),
    ({"ssl_backbones": ["resnet152"]}, "unknown ssl_backbones"),
    ({"ssl_objectives": ["cpc"], "ssl_sequence_length": 3}, "ssl_sequence_length"),
])
def test_bad_settings_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        bench_ssl.run(OmegaConf.create({**TINY, **override}))


def test_registered_as_a_bench():
    assert BENCHES["ssl"] == "worldssl.bench.ssl"


@pytest.mark.parametrize("name, kwargs", [("simclr", {}), ("byol", {}), ("moco", {"version": 3})])
def test_shared_encoder_pass_gives_the_same_loss_and_gradients(name, kwargs):
    """The one-pass-for-both-views path (used on accelerators) against two passes, forced on CPU."""
    import torch

    from worldssl import encoders, ssl

    torch.manual_seed(0)
    obj = ssl.build(name, encoders.build("conv", (6, 32, 32), num_layers=2), **kwargs)
    assert obj.batch_independent and obj.shared_pass is None
    obs = torch.randint(0, 256, (8, 6, 32, 32), dtype=torch.uint8)
    results = []
    for shared in (True, False):
        obj.shared_pass = shared
        torch.manual_seed(1)  # the same views
        loss, _ = obj.loss(ssl.SSLBatch(obs))
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in obj.encoder.parameters()]))
        obj.zero_grad(set_to_none=True)
    (l1, g1), (l2, g2) = results
    torch.testing.assert_close(l1, l2)
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert not ssl.build(name, encoders.build("resnet", (6, 32, 32)), **kwargs).batch_independent  # BatchNorm
