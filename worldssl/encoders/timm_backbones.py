"""ImageNet-style backbones from timm (always randomly initialised here): ResNet and ViT.

Both take any number of stacked channels (``in_chans = C``) and normalise each RGB frame of the stack with the
ImageNet mean/std, as published ImageNet/robotics checkpoints (MoCo, MAE, MVP, R3M) expect. A channel count
that is not a multiple of 3 is mapped to ``[-1, 1]`` instead (mean 0.5, std 0.5).
"""

from __future__ import annotations

from typing import Any

import torch

from worldssl.encoders.base import Encoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RESNET_ARCHES = ("resnet18", "resnet34", "resnet50")
# name -> (embed_dim, depth, num_heads), as in Dosovitskiy et al. 2021 / Touvron et al. 2021
VIT_ARCHES = {
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 6),
    "vit_base": (768, 12, 12),
    "vit_large": (1024, 24, 16),
    "vit_huge": (1280, 32, 16),
}


class _ImageNetNormalized(Encoder):
    """Shared normalisation: ``(x / 255 - mean) / std`` per channel, stats repeated over stacked frames."""

    def _init_normalization(self) -> None:
        channels = self.obs_shape[0]
        if channels % 3 == 0:
            mean, std = list(IMAGENET_MEAN) * (channels // 3), list(IMAGENET_STD) * (channels // 3)
        else:
            mean, std = [0.5] * channels, [0.5] * channels
        # not persistent: the stats are a function of obs_shape, not weights to save or load
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """Float pixels in ``[0, 1]`` -> ImageNet-normalised ``(x - mean) / std``."""
        return (x - self.pixel_mean) / self.pixel_std

    def normalization(self) -> dict[str, Any]:
        imagenet = self.obs_shape[0] % 3 == 0
        return {"type": "imagenet" if imagenet else "half", "formula": "(x / 255 - mean) / std",
                "input": "uint8 [0, 255] or float [0, 1] (pixel / 255)", "mean": self.pixel_mean.flatten().tolist(),
                "std": self.pixel_std.flatten().tolist()}


class ResNetEncoder(_ImageNetNormalized):
    """timm ResNet (``in_chans = C``, no classifier): uint8 ``(B, C, H, W)`` -> globally pooled ``(B, 512 | 2048)``.

    Args:
        obs_shape: ``(C, H, W)``; any ``H, W`` the network can downsample (the pooling is global).
        arch: ``resnet18``, ``resnet34`` or ``resnet50``.
    """

    kind = "resnet"

    def __init__(self, obs_shape: tuple[int, int, int], arch: str = "resnet18"):
        super().__init__(obs_shape)
        if arch not in RESNET_ARCHES:
            raise ValueError(f"unknown ResNet arch {arch!r}; valid: {', '.join(RESNET_ARCHES)}")
        self.arch = arch
        self._init_normalization()
        import timm  # imported on first use: timm (and torchvision under it) costs ~200 MB of resident memory

        self.net = timm.create_model(arch, pretrained=False, in_chans=self.obs_shape[0], num_classes=0)
        self.finish_init()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # [B, num_features]

    def arch_config(self) -> dict[str, Any]:
        return {"arch": self.arch}


class ViTEncoder(_ImageNetNormalized):
    """timm ``VisionTransformer`` kept as ``self.vit``: uint8 ``(B, C, H, W)`` -> pooled ``(B, embed_dim)``.

    Args:
        obs_shape: ``(C, H, W)``; ``H`` and ``W`` must be multiples of ``patch_size``.
        arch: a name of :data:`VIT_ARCHES` giving the default width, depth and heads.
        patch_size: side of the square patches (8 suits 64-84 px observations).
        global_pool: ``"token"`` (the class token after the final norm) or ``"avg"`` (mean of the patch tokens,
            then ``fc_norm``).
        depth, embed_dim, num_heads: override the arch's values (``num_heads`` defaults to ``embed_dim // 64``,
            at least 1, when only ``embed_dim`` is overridden).
        mlp_ratio: hidden width of the MLPs over ``embed_dim``.
    """

    kind = "vit"

    def __init__(self, obs_shape: tuple[int, int, int], arch: str = "vit_tiny", patch_size: int = 8,
                 global_pool: str = "token", depth: int | None = None, embed_dim: int | None = None,
                 num_heads: int | None = None, mlp_ratio: float = 4.0):
        super().__init__(obs_shape)
        if arch not in VIT_ARCHES:
            raise ValueError(f"unknown ViT arch {arch!r}; valid: {', '.join(VIT_ARCHES)}")
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
        _, h, w = self.obs_shape
        if patch_size < 1 or h % patch_size or w % patch_size:
            raise ValueError(f"ViT patch_size {patch_size} must divide the image size {h}x{w}; "
                             f"pick a patch size that divides both or resize the observations")
        arch_embed, arch_depth, arch_heads = VIT_ARCHES[arch]
        if num_heads is None:
            num_heads = arch_heads if embed_dim is None else max(1, int(embed_dim) // 64)
        self.arch, self.patch_size, self.global_pool = arch, int(patch_size), global_pool
        self.embed_dim = int(embed_dim if embed_dim is not None else arch_embed)
        self.depth = int(depth if depth is not None else arch_depth)
        self.num_heads, self.mlp_ratio = int(num_heads), float(mlp_ratio)
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        self._init_normalization()
        from timm.models.vision_transformer import VisionTransformer

        self.vit = VisionTransformer(img_size=(h, w), patch_size=self.patch_size, in_chans=self.obs_shape[0],
                                     embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads,
                                     mlp_ratio=self.mlp_ratio, num_classes=0, global_pool=global_pool)
        self.finish_init()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(x)  # [B, embed_dim]: pooled, no classifier (num_classes=0)

    def arch_config(self) -> dict[str, Any]:
        return {"arch": self.arch, "patch_size": self.patch_size, "global_pool": self.global_pool,
                "depth": self.depth, "embed_dim": self.embed_dim, "num_heads": self.num_heads,
                "mlp_ratio": self.mlp_ratio}
