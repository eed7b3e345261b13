"""One input contract for every encoder family: uint8 ``[0, 255]`` or float ``[0, 1]`` (pixel / 255), each family
normalising inside; ``encoder(x)`` and ``encoder(x.float() / 255)`` give the same features."""

from __future__ import annotations

import pytest
import torch

from worldssl.encoders import FrameWise, build
from worldssl.encoders.base import to_unit
from worldssl.worldmodels.slots import FlatMapEncoder, SlotEncoder

FAMILIES = {
    "conv": lambda: build("conv", (6, 32, 32), feature_dim=8, num_filters=4, num_layers=2),
    "resnet": lambda: build("resnet", (6, 32, 32)),
    "vit": lambda: build("vit", (3, 32, 32), depth=1, patch_size=8),
    "vit_grey": lambda: build("vit", (4, 32, 32), depth=1, patch_size=8),
    "slots": lambda: SlotEncoder((3, 50, 50), num_slots=3, hidden_dim=16),
    "cswm_flat": lambda: FlatMapEncoder((3, 50, 50), num_maps=4, latent_dim=8, hidden_dim=16),
    "framewise": lambda: FrameWise(build("conv", (3, 32, 32), feature_dim=8, num_filters=4, num_layers=2), 2),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_uint8_and_unit_float_give_the_same_features(family):
    torch.manual_seed(0)
    enc = FAMILIES[family]().eval()
    x = torch.randint(0, 256, (2, *enc.obs_shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    unit = x.float() / 255
    with torch.no_grad():
        a, b = enc(x), enc(unit)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(unit, x.float() / 255)  # the caller's float tensor is not modified in place
    if family != "framewise":  # a frame-wise encoder hands the frames on, its inner encoder normalises them
        torch.testing.assert_close(enc.normalize(x), enc.normalize(unit), rtol=0, atol=0)
        assert enc.normalization()["input"] == "uint8 [0, 255] or float [0, 1] (pixel / 255)"


def test_each_family_normalises_from_the_unit_range():
    white = torch.ones(1, 3, 50, 50)
    assert torch.allclose(build("conv", (3, 50, 50), num_layers=1).normalize(white), torch.full_like(white, 0.5))
    assert torch.allclose(SlotEncoder((3, 50, 50)).normalize(white), white)
    imagenet = build("resnet", (3, 50, 50)).normalize(white)[0, :, 0, 0]
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(imagenet, expected)


def test_integer_frames_other_than_uint8_are_refused():
    with pytest.raises(TypeError, match="uint8"):
        to_unit(torch.zeros(1, 3, 4, 4, dtype=torch.int64))
