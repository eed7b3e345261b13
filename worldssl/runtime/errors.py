"""One exception type for mistakes the user can fix; the CLI prints it as one line and exits 2."""

from __future__ import annotations


class WorldsslError(Exception):
    """A user-facing error: the message names the problem and the fix, on one line."""


class ConfigError(WorldsslError):
    """A config value that cannot work (unknown id, out-of-range number, missing path)."""


class DataError(WorldsslError):
    """A dataset that is missing, from another env, truncated or corrupt."""


class CheckpointError(WorldsslError):
    """A checkpoint that is missing, corrupt, of an unknown format, or does not fit the architecture asked for."""


class Interrupted(Exception):
    """A run stopped by a signal (SIGTERM: cluster preemption) after writing its checkpoint; not a mistake, so
    not a :class:`WorldsslError`: the CLI prints the message as one line and exits ``128 + signum``."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = int(signum)
