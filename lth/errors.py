"""One exception type for every error a user can cause.

The CLI prints these as a single line (``error: ...``) and exits with status 2; anything else is a bug.
"""


class LthError(Exception):
    """A problem with the user's input: a config value, a file, a shape."""


class ConfigError(LthError):
    """A bad configuration value or flag."""


class DataError(LthError):
    """A missing, malformed or truncated data file."""


class RunDirError(LthError):
    """A run directory that cannot be used: held by another process, or a file in it unreadable."""


class NonFiniteLoss(LthError):
    """Training produced a NaN or infinite loss; ``step`` and ``member`` say where."""

    def __init__(self, msg: str, step: int | None = None, member: int | None = None):
        super().__init__(msg)
        self.step, self.member = step, member
