"""Errors that are the user's to fix. The CLI prints their message on one line and exits with code 2."""


class UserError(Exception):
    """Bad input: a config, an argument or a data file. The message names what is wrong and what is valid."""


class ConfigError(UserError):
    """A config file, `--set` or `--sweep` value that does not fit the schema."""


class DataError(UserError):
    """A dataset folder that is missing, changed or truncated."""
