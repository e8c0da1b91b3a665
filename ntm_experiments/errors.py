"""The errors a user can act on: the console scripts print their one-line message and exit 2."""

from __future__ import annotations


class RunError(Exception):
    """A problem the user can act on; the CLI prints its one-line message and exits 2."""


class ConfigError(RunError, ValueError):
    """A bad setting, path or checkpoint."""


class TrainingDiverged(RunError):
    """Training kept producing non-finite values after restoring the last good state."""


__all__ = ["RunError", "ConfigError", "TrainingDiverged"]
