"""Errors that are the user's to fix. The CLI prints their message on one line and exits with code 2."""


class UserError(Exception):
    """Bad input: a config, an argument or a data file. The message names what is wrong and what is valid."""


class ConfigError(UserError):
    """A config file, `--set` or `--sweep` value that does not fit the schema."""


class DataError(UserError):
    """A dataset folder that is missing, changed or truncated."""


class BadValue(UserError, ValueError):
    """A value the user gave (a flag's, a config key's) that does not fit; a ValueError to Python callers too.

    Raise it only where the value is the user's: a ValueError from anywhere else is an internal error,
    which the command line reports with its traceback (exit code 1)."""
