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


class EnvironmentCrashed(HarnessError):
    """The environment's engine (e.g. ScienceWorld's JVM) died mid-episode."""


class ProviderError(HarnessError):
    """A model provider failed after all retries."""


class MissingDependencyError(HarnessError):
    """A system dependency (e.g. Java) is missing; the message says how to install it."""
