"""Hydra configs: one root config per CLI verb, and groups (env/, ...) composed into them."""
