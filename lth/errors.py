"""One exception type for every error a user can cause.

The CLI prints these as a single line (``error: ...``) and exits with status 2; anything else is a bug.
"""


class LthError(Exception):
    """A problem with the user's input: a config value, a file, a shape."""


class ConfigError(LthError):
    """A bad configuration value or flag."""


class DataError(LthError):
    """A missing, malformed or truncated data file."""
