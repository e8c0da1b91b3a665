"""The errors a user can act on: the console scripts print their one-line message and exit 2."""

from __future__ import annotations


class RunError(Exception):
    """A problem the user can act on; the CLI prints its one-line message and exits 2."""


class ConfigError(RunError, ValueError):
    """A bad setting, path or checkpoint."""


class TrainingDiverged(RunError):
    """Training kept producing non-finite values after restoring the last good state."""


class Interrupted(SystemExit):
    """Training stopped by a signal between two steps (interrupts.py), its checkpoint written: the
    CLI prints the one-line message; the exit code is the shell's for that signal, 128 + its number
    (130 for SIGINT, 143 for SIGTERM). A SystemExit, so that no launcher or sweep catches it as a
    failed job and goes on with the next one."""

    def __init__(self, message: str, signum: int, checkpointed: bool = False):
        super().__init__(128 + signum)
        self.message, self.signum, self.checkpointed = message, signum, checkpointed

    def __str__(self) -> str:
        return self.message


__all__ = ["RunError", "ConfigError", "TrainingDiverged", "Interrupted"]
