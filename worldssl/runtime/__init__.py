"""Cross-cutting plumbing: rendering setup, errors, atomic I/O, seeding, logging, progress."""

from worldssl.runtime.errors import ConfigError, DataError, WorldsslError
from worldssl.runtime.io import atomic_open, write_json
from worldssl.runtime.rendering import prepare_rendering

__all__ = ["ConfigError", "DataError", "WorldsslError", "atomic_open", "write_json", "prepare_rendering"]
