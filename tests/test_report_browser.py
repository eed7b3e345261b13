"""report.html opened in a real browser (headless Chromium, Debian's package): the page renders and every
embedded figure loads. `.ci/run` installs chromium; the test skips, saying so, only where it is absent."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_report import REPS, train_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed and could not be installed "
                                "here (`apt-get install -y chromium`; .ci/run installs it before the tests)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--window-size=1400,3000"]


def chromium(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=180, check=True)


def saturated_pixels(png: Path) -> tuple[int, float]:
    """(pixels of a saturated colour, share of non-white pixels): the page's own styles are greys only, the
    figures' lines and bands are colours."""
    import matplotlib.image

    rgb = matplotlib.image.imread(png)[..., :3]
    saturation = rgb.max(axis=-1) - rgb.min(axis=-1)
    return int((saturation > 0.25).sum()), float((rgb.min(axis=-1) < 0.95).mean())


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    from worldssl.report import make_report

    tmp = tmp_path_factory.mktemp("browser")
    for seed in (0, 1):
        train_run(tmp / "runs" / f"frozen-{seed}", seed, "frozen", 200.0 + 50 * seed)
        train_run(tmp / "runs" / f"scratch-{seed}", seed, "scratch", 400.0 - 30 * seed)
    train_run(tmp / "runs" / "x<script>alert(1)<", 2, "curl", 300.0, note="<img src=x onerror=alert(3)>",
              summary=False)
    _, page = make_report([tmp / "runs"], tmp / "report", reps=REPS)
    return page


def test_page_renders_with_its_figures(report, tmp_path):
    shot = tmp_path / "page.png"
    chromium(tmp_path, report, f"--screenshot={shot}")
    colour, inked = saturated_pixels(shot)
    # the same page with its figures' data broken: what the page looks like when no figure loads
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,AAAA", report.read_text()))
    chromium(tmp_path, broken, f"--screenshot={tmp_path / 'broken.png'}")
    colour_broken, inked_broken = saturated_pixels(tmp_path / "broken.png")
    assert inked > 0.02  # text, tables and figures: not a blank page
    assert colour > 5000 and colour > 20 * (colour_broken + 50), (colour, colour_broken)
    assert inked > inked_broken


def test_every_figure_has_loaded_and_no_script_runs(report, tmp_path):
    dom = chromium(tmp_path, report, "--dump-dom", "--virtual-time-budget=3000").stdout
    assert "<script" not in dom and "onerror" not in dom.replace("onerror=alert(3)&gt;", "")
    assert "x&lt;script&gt;alert(1)&lt;" in dom
    images = len(re.findall(r"<img ", dom))
    assert images == 3
    # a copy with a probe script appended (the report's own policy forbids scripts): each image's natural width
    probe = tmp_path / "probe.html"
    text = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", report.read_text())
    probe.write_text(text.replace("</body>", "<script>window.addEventListener('load', () => {document.body."
                                  "setAttribute('data-widths', Array.from(document.images).map(i => i.naturalWidth)"
                                  ".join(','));});</script></body>"))
    dom = chromium(tmp_path, probe, "--dump-dom", "--virtual-time-budget=5000").stdout
    widths = [int(w) for w in re.search(r'data-widths="([0-9,]*)"', dom).group(1).split(",")]
    assert len(widths) == images and all(w > 300 for w in widths), widths
    assert np.all(np.array(widths) > 0)
