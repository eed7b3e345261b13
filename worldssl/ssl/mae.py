"""MAE: mask most patches, encode the visible ones with the ViT, reconstruct the pixels of the rest.

He, Chen, Xie, Li, Dollar & Girshick, "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022.
Per-sample random masking (75%), the encoder sees only the visible patches (plus its prefix tokens),
a light transformer decoder (here 2 blocks of width 128; the paper's default is 8 blocks of 512) gets
the encoded patches plus a shared learned mask token at the masked positions, and the loss is the MSE
on the masked patches against per-patch normalised pixels (``norm_pix_loss``).

The encoder is a worldssl ViT encoder holding a timm ``VisionTransformer`` as ``encoder.vit``; only its
``patch_embed``, ``pos_embed``, ``cls_token``, ``blocks``, ``norm`` and ``num_prefix_tokens`` are used
(and ``reg_token`` / ``norm_pre`` when present).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from worldssl.encoders.base import Encoder
from worldssl.ssl.base import SSLObjective, read_metrics
from worldssl.ssl.batch import SSLBatch
from worldssl.ssl.losses.masked_patch_mse import masked_patch_mse


def sincos_pos_embed_2d(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding ``(grid_h * grid_w, dim)``, row-major over the grid.

    Half the channels encode the row, half the column; each half is ``[sin(pos * w_i), cos(pos * w_i)]``
    with frequencies ``w_i = 10000^(-i / (dim / 4))`` (Vaswani et al. 2017, extended to 2-D as in MAE).
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(grid_h, dtype=torch.float64),
                                torch.arange(grid_w, dtype=torch.float64), indexing="ij")
    ang_r = rows.reshape(-1, 1) * omega  # [L, dim/4]
    ang_c = cols.reshape(-1, 1) * omega
    return torch.cat([ang_r.sin(), ang_r.cos(), ang_c.sin(), ang_c.cos()], dim=1).float()


class MAE(SSLObjective):
    """Masked autoencoder pre-training of a ViT :class:`Encoder`.

    Args:
        mask_ratio: fraction of patches removed per sample (0.75).
        decoder_dim, decoder_depth, decoder_heads: the light decoder (128, 2, 4).
        norm_pix_loss: normalise each target patch by its mean and std (True).
        decoder_pos_embed: ``"sincos"`` (fixed, as in MAE) or ``"learned"``.
        augment: optional augmentation of the input frames (MAE uses only random resized crops): an
            ``nn.Module``, or a mapping of :class:`worldssl.data.augment.Augment` arguments (from a config).
    """

    batch_kind = "frames"

    def __init__(self, encoder: Encoder, mask_ratio: float = 0.75, decoder_dim: int = 128, decoder_depth: int = 2,
                 decoder_heads: int = 4, norm_pix_loss: bool = True, decoder_pos_embed: str = "sincos",
                 augment: nn.Module | Mapping[str, Any] | None = None):
        super().__init__(encoder)
        if isinstance(augment, Mapping):
            from worldssl.data.augment import Augment

            augment = Augment.from_config(augment)
        vit = getattr(encoder, "vit", None)
        if vit is None or not hasattr(vit, "patch_embed"):
            raise TypeError(f"MAE needs a ViT encoder exposing .vit (a timm VisionTransformer); "
                            f"got {type(encoder).__name__}")
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        if decoder_pos_embed not in ("sincos", "learned"):
            raise ValueError(f"decoder_pos_embed must be 'sincos' or 'learned', got {decoder_pos_embed!r}")
        self.mask_ratio = float(mask_ratio)
        self.norm_pix_loss = bool(norm_pix_loss)
        self.augment = augment
        self.in_chans = int(encoder.obs_shape[0])
        self.patch_size = int(_pair(vit.patch_embed.patch_size)[0])
        self.grid = tuple(int(g) for g in _pair(vit.patch_embed.grid_size))
        self.num_patches = self.grid[0] * self.grid[1]
        self.num_prefix = int(vit.num_prefix_tokens)
        embed_dim = int(vit.pos_embed.shape[-1]) if vit.pos_embed is not None else int(vit.embed_dim)

        self.decoder_embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        pos = sincos_pos_embed_2d(decoder_dim, *self.grid).unsqueeze(0)  # [1, L, Dd]
        self.decoder_pos_embed = nn.Parameter(pos, requires_grad=decoder_pos_embed == "learned")
        from timm.models.vision_transformer import Block  # on first use, like the timm backbones

        self.decoder_blocks = nn.ModuleList(Block(decoder_dim, decoder_heads, mlp_ratio=4.0, qkv_bias=True)
                                            for _ in range(decoder_depth))
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch_size ** 2 * self.in_chans)
        self._init_decoder()

    def _init_decoder(self) -> None:
        nn.init.normal_(self.mask_token, std=0.02)
        for m in [self.decoder_embed, self.decoder_pred, *self.decoder_blocks.modules()]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def vit(self) -> nn.Module:
        return self.encoder.vit

    # -- patches ------------------------------------------------------------------------------------
    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, L, p*p*C)``, each patch flattened in (row, column, channel) order."""
        n, c, _, _ = imgs.shape
        p, (gh, gw) = self.patch_size, self.grid
        x = imgs.reshape(n, c, gh, p, gw, p)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(n, gh * gw, p * p * c)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """``(N, L, p*p*C)`` -> ``(N, C, H, W)``; the inverse of :meth:`patchify`."""
        n = patches.shape[0]
        p, (gh, gw), c = self.patch_size, self.grid, self.in_chans
        x = patches.reshape(n, gh, gw, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(n, c, gh * p, gw * p)

    def random_masking(self, x: torch.Tensor, mask_ratio: float,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keep a random ``1 - mask_ratio`` of the tokens of each sample.

        ``x`` ``(N, L, D)`` -> kept tokens ``(N, L_keep, D)``, mask ``(N, L)`` (1 = removed), and
        ``ids_restore`` ``(N, L)`` that puts the shuffled sequence back in patch order.
        """
        n, length, d = x.shape
        keep = int(length * (1 - mask_ratio))
        noise = torch.rand(n, length, device=x.device, generator=generator)
        ids_shuffle = noise.argsort(dim=1)  # ascending: the first `keep` are kept
        ids_restore = ids_shuffle.argsort(dim=1)
        ids_keep = ids_shuffle[:, :keep]
        x_kept = x.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, d))  # [N, L_keep, D]
        mask = torch.ones(n, length, device=x.device)
        mask[:, :keep] = 0
        mask = mask.gather(1, ids_restore)  # [N, L], in patch order
        return x_kept, mask, ids_restore

    # -- stages -------------------------------------------------------------------------------------
    def _prefix_tokens(self, n: int) -> list[torch.Tensor]:
        vit = self.vit
        tokens = []
        for name in ("cls_token", "reg_token"):
            tok = getattr(vit, name, None)
            if tok is not None:
                tokens.append(tok.expand(n, -1, -1))
        return tokens

    def forward_encoder(self, x: torch.Tensor, mask_ratio: float,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised float images ``(N, C, H, W)`` -> ``latent`` ``(N, P + L_keep, D)`` (P prefix tokens),
        ``mask`` ``(N, L)``, ``ids_restore`` ``(N, L)``."""
        vit = self.vit
        tokens = vit.patch_embed(x)
        if tokens.dim() == 4:  # NHWC output (dynamic image size)
            tokens = tokens.flatten(1, 2)
        n, length, _ = tokens.shape  # [N, L, D]
        pos = vit.pos_embed
        prefix = self._prefix_tokens(n)
        prefix_pos = None
        if pos is not None:
            if pos.shape[1] == length + self.num_prefix:
                prefix_pos, pos = pos[:, : self.num_prefix], pos[:, self.num_prefix:]
            tokens = tokens + pos
        tokens, mask, ids_restore = self.random_masking(tokens, mask_ratio, generator)  # [N, L_keep, D]
        if prefix:
            prefix = torch.cat(prefix, dim=1)  # [N, P, D]
            if prefix_pos is not None:
                prefix = prefix + prefix_pos
            tokens = torch.cat([prefix, tokens], dim=1)  # [N, P + L_keep, D]
        tokens = getattr(vit, "norm_pre", nn.Identity())(tokens)
        for blk in vit.blocks:
            tokens = blk(tokens)
        return vit.norm(tokens), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """``latent`` ``(N, P + L_keep, D)``, ``ids_restore`` ``(N, L)`` -> ``pred`` ``(N, L, p*p*C)``."""
        x = self.decoder_embed(latent)  # [N, P + L_keep, Dd]
        n, length = ids_restore.shape
        prefix, visible = x[:, : self.num_prefix], x[:, self.num_prefix:]
        masked = self.mask_token.expand(n, length - visible.shape[1], -1)
        x = torch.cat([visible, masked], dim=1)  # [N, L, Dd], shuffled order
        x = x.gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # patch order
        x = torch.cat([prefix, x + self.decoder_pos_embed], dim=1)  # [N, P + L, Dd]
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_pred(self.decoder_norm(x))  # [N, P + L, p*p*C]
        return x[:, self.num_prefix:]  # [N, L, p*p*C]

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``imgs`` ``(N, C, H, W)``, ``pred`` ``(N, L, p*p*C)``, ``mask`` ``(N, L)`` -> scalar MSE on masked patches.

        Raises FloatingPointError on a non-finite loss."""
        loss = masked_patch_mse(self.patchify(imgs), pred, mask, norm_pix=self.norm_pix_loss)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"MAE loss is {loss.item()}")
        return loss

    def loss(self, batch: SSLBatch) -> tuple[torch.Tensor, dict[str, float]]:
        self.check_batch(batch)
        obs = self.augment(batch.obs) if self.augment is not None else batch.obs
        if tuple(obs.shape[1:]) != self.encoder.obs_shape:
            raise ValueError(f"MAE expects obs (B, {self.encoder.obs_shape}), got {tuple(obs.shape)}")
        imgs = self.encoder.normalize(obs)  # [N, C, H, W] float
        latent, mask, ids_restore = self.forward_encoder(imgs, self.mask_ratio)
        pred = self.forward_decoder(latent, ids_restore)
        loss = masked_patch_mse(self.patchify(imgs), pred, mask, norm_pix=self.norm_pix_loss)
        return loss, read_metrics("MAE", loss=loss, mask_ratio=mask.mean())  # raises on a non-finite loss


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)
