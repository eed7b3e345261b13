"""SSL loss functions, one per file, as plain functions on embeddings."""

from worldssl.ssl.losses.cpc_info_nce import cpc_info_nce, cpc_logits
from worldssl.ssl.losses.info_nce import info_nce, info_nce_logits
from worldssl.ssl.losses.masked_patch_mse import masked_patch_mse
from worldssl.ssl.losses.negative_cosine import negative_cosine
from worldssl.ssl.losses.nt_xent import nt_xent, nt_xent_logits

__all__ = ["cpc_info_nce", "cpc_logits", "info_nce", "info_nce_logits", "masked_patch_mse", "negative_cosine",
           "nt_xent", "nt_xent_logits"]
