"""Batched image augmentations for stacked-frame observations ``(B, C, H, W)``.

Every function draws its random parameters per sample (one value per row of the batch) and applies the
same parameters to all channels of that sample, so the frames of a stack (``C = k * 3`` or ``k * 1``)
get the same crop and the same colour change. Inputs may be uint8 (``[0, 255]``, returned as uint8,
rounded) or float (taken as intensities in ``[0, 1]`` for the clamping of :func:`color_jitter`;
returned as float). Pass a ``torch.Generator`` for reproducible draws; without one the global RNG is
used, so ``torch.manual_seed`` also makes them deterministic.

* :func:`random_shift`: DrQ (Kostrikov et al., 2020; Yarats et al., 2021): replicate-pad by ``pad``
  pixels, crop back to ``H x W`` at a random integer offset.
* :func:`random_resized_crop`: a random box of ``scale`` of the area and ``ratio`` aspect, resized back
  to ``H x W`` with bilinear ``grid_sample``.
* :func:`color_jitter`: brightness, contrast, saturation factors drawn uniformly in ``[1 - s, 1 + s]``,
  applied with probability ``p`` per sample, in that fixed order (torchvision shuffles the order).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None,
             device: torch.device) -> torch.Tensor:
    """``n`` floats uniform in ``[low, high)``, drawn on the generator's device, returned on ``device``."""
    gen_device = generator.device if generator is not None else device
    u = torch.rand(n, generator=generator, device=gen_device)
    return (low + (high - low) * u).to(device)


def _randint(n: int, high: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else device
    return torch.randint(0, high, (n,), generator=generator, device=gen_device).to(device)


def _check(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")


def _restore_dtype(out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.to(dtype)


def random_shift(x: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ random shift: replicate-pad by ``pad`` then crop ``H x W`` at a random offset per sample.

    Implemented as a gather with clamped indices (clamping an index into the image *is* replicate
    padding), so it is exact and keeps the dtype.
    """
    _check(x)
    if pad <= 0:
        return x
    b, _, h, w = x.shape
    dy = _randint(b, 2 * pad + 1, generator, x.device)  # offset into the padded image
    dx = _randint(b, 2 * pad + 1, generator, x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device) - pad).clamp_(0, h - 1)  # [B, H]
    cols = (dx[:, None] + torch.arange(w, device=x.device) - pad).clamp_(0, w - 1)  # [B, W]
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # [B, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


def random_resized_crop(x: torch.Tensor, scale: tuple[float, float] = (0.5, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Crop a random box (area fraction in ``scale``, aspect ``w/h`` in ``ratio``) and resize it to ``H x W``.

    The box is drawn per sample in normalised coordinates (its width and height clipped to the image)
    and sampled with an affine grid and bilinear ``grid_sample`` (border padding, never needed since the
    box lies inside the image).
    """
    _check(x)
    b = x.shape[0]
    dev = x.device
    area = _uniform(b, scale[0], scale[1], generator, dev)
    log_r = _uniform(b, math.log(ratio[0]), math.log(ratio[1]), generator, dev)
    aspect = torch.exp(log_r)
    # fractions of the image width / height covered by the box
    fw = torch.sqrt(area * aspect).clamp(max=1.0)
    fh = torch.sqrt(area / aspect).clamp(max=1.0)
    # box centre in [-1, 1] coordinates, chosen so the box stays inside the image
    cx = (1 - fw) * (2 * _uniform(b, 0.0, 1.0, generator, dev) - 1)
    cy = (1 - fh) * (2 * _uniform(b, 0.0, 1.0, generator, dev) - 1)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2] = fw, cx
    theta[:, 1, 1], theta[:, 1, 2] = fh, cy
    xf = x.float()
    grid = F.affine_grid(theta, list(xf.shape), align_corners=False)
    out = F.grid_sample(xf, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return _restore_dtype(out, x.dtype)


def _frames(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """View ``(B, C, H, W)`` as ``(B, F, c, H, W)`` with ``c = 3`` (RGB frames) or ``c = 1``."""
    b, c, h, w = x.shape
    rgb = c % 3 == 0
    return x.reshape(b, c // 3 if rgb else c, 3 if rgb else 1, h, w), rgb


def _gray(frames: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of ``(B, F, 3, H, W)`` -> ``(B, F, 1, H, W)``: ``0.299 r + 0.587 g + 0.114 b``."""
    r, g, b = frames[:, :, 0:1], frames[:, :, 1:2], frames[:, :, 2:3]
    return (r * 0.299).add_(g * 0.587).add_(b * 0.114)


def color_jitter(x: torch.Tensor, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 p: float = 0.8, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample colour jitter, the same factors for every frame of a stack.

    With probability ``p`` a sample gets brightness ``x * b``, then contrast ``m + c (x - m)`` (``m``: mean
    grey level of each frame), then saturation ``g + s (x - g)`` (``g``: the frame's grey image), each
    factor uniform in ``[1 - v, 1 + v]``; results are clamped to the valid range (``[0, 255]`` for
    uint8, ``[0, 1]`` for float). Saturation is skipped when ``C % 3 != 0`` (grey frames).
    """
    _check(x)
    b = x.shape[0]
    dev = x.device
    top = 255.0 if x.dtype == torch.uint8 else 1.0
    frames, rgb = _frames(x.float())
    # draw every factor whatever p is, so the random stream does not depend on which samples are jittered
    bf = _uniform(b, 1 - brightness, 1 + brightness, generator, dev).view(b, 1, 1, 1, 1)
    cf = _uniform(b, 1 - contrast, 1 + contrast, generator, dev).view(b, 1, 1, 1, 1)
    sf = _uniform(b, 1 - saturation, 1 + saturation, generator, dev).view(b, 1, 1, 1, 1)
    apply = (_uniform(b, 0.0, 1.0, generator, dev) < p).view(b, 1, 1, 1, 1)
    # in-place after the first product: each step is one pass over the batch and allocates nothing
    out = (frames * bf).clamp_(0, top)
    mean = (_gray(out) if rgb else out).mean(dim=(2, 3, 4), keepdim=True)
    out.sub_(mean).mul_(cf).add_(mean).clamp_(0, top)  # m + c (x - m)
    if rgb:
        grey = _gray(out)
        out.sub_(grey).mul_(sf).add_(grey).clamp_(0, top)  # g + s (x - g)
    out = torch.where(apply, out, frames).reshape(x.shape)
    return _restore_dtype(out, x.dtype)


class Augment(nn.Module):
    """Compose the augmentations above: crop, then shift, then colour jitter (each behind a flag).

    Args:
        shift: apply :func:`random_shift` with ``pad`` pixels.
        crop: apply :func:`random_resized_crop` with ``crop_scale`` / ``crop_ratio``.
        jitter: apply :func:`color_jitter` with ``brightness`` / ``contrast`` / ``saturation`` / ``jitter_p``.
        generator: optional default ``torch.Generator`` (a call may pass its own).
    """

    def __init__(self, shift: bool = True, crop: bool = False, jitter: bool = False, pad: int = 4,
                 crop_scale: tuple[float, float] = (0.5, 1.0),
                 crop_ratio: tuple[float, float] = (3 / 4, 4 / 3), brightness: float = 0.4,
                 contrast: float = 0.4, saturation: float = 0.4, jitter_p: float = 0.8,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.shift, self.crop, self.jitter = bool(shift), bool(crop), bool(jitter)
        self.pad = int(pad)
        self.crop_scale = tuple(float(s) for s in crop_scale)
        self.crop_ratio = tuple(float(r) for r in crop_ratio)
        self.brightness, self.contrast, self.saturation = float(brightness), float(contrast), float(saturation)
        self.jitter_p = float(jitter_p)
        self.generator = generator

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> Augment:
        """Build from a mapping with the constructor's keys (e.g. a hydra ``augment`` group)."""
        return cls(**dict(cfg or {}))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        g = generator if generator is not None else self.generator
        if self.crop:
            x = random_resized_crop(x, self.crop_scale, self.crop_ratio, generator=g)
        if self.shift:
            x = random_shift(x, self.pad, generator=g)
        if self.jitter:
            x = color_jitter(x, self.brightness, self.contrast, self.saturation, self.jitter_p, generator=g)
        return x

    def extra_repr(self) -> str:
        return f"shift={self.shift}(pad={self.pad}), crop={self.crop}{self.crop_scale}, jitter={self.jitter}"
