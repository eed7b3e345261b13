"""Judging representations and world models: state probes (and, with world models, latent ranking)."""

from worldssl.eval.probe import ProbeResult, probe_encoder, probe_features, r2_per_dim, ridge_fit

__all__ = ["ProbeResult", "probe_encoder", "probe_features", "r2_per_dim", "ridge_fit"]
