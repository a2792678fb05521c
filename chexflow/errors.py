"""Errors a user can cause. The CLI turns them into one line and exit code 2."""


class ChexflowError(ValueError):
    """Bad input or configuration: the message says what to fix, in one line."""


class DataError(ChexflowError):
    """A dataset problem: names the file, row and column where it can."""


class ConfigError(ChexflowError):
    """A configuration problem: names the key and the allowed values."""
