"""Exceptions with one-line messages that name the offending thing.

``HarnessError`` subclasses are user-facing: the CLI prints ``str(exc)`` and
exits non-zero without a traceback.
"""


class HarnessError(Exception):
    """A problem the user can fix; its message is one line naming the thing."""


class ConfigError(HarnessError):
    """A malformed or inconsistent config, pool or benchmark file."""


class UnknownNameError(HarnessError):
    """An unknown router, model, pool, task or benchmark name."""


class TrajectoryError(HarnessError):
    """A corrupt or unreadable trajectory file."""


class UnknownItem(TrajectoryError):
    """A logged record is of a benchmark's kind but names an item the plug-in does not have."""

    def __init__(self, message: str, item: str):
        super().__init__(message)
        self.item = item


class RunLockedError(HarnessError):
    """Another process is writing the run directory."""


class InfrastructureError(HarnessError):
    """What runs an episode failed, not the episode: its record is retried when the run is rerun."""


class EnvironmentCrashed(InfrastructureError):
    """The environment's engine (e.g. ScienceWorld's JVM) died mid-episode."""


class ProviderError(InfrastructureError):
    """A model provider failed after all retries."""


class WorkerDied(InfrastructureError):
    """The worker process playing an episode died (killed, out of memory) too many times."""


class StorageError(InfrastructureError):
    """A write failed for want of storage (full disk, quota, read-only or failing device); see
    :mod:`harness.storage`. The episode it interrupted is played again on rerun, in a roomier place."""


class MissingDependencyError(HarnessError):
    """A system dependency (e.g. Java) is missing; the message says how to install it."""


class BatchInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a batch; the message says what is recorded and how to resume."""
