"""Errors that the command line reports as one line (``ccsam: error: ...``) instead of a traceback."""


class CcsamError(Exception):
    """A problem with the user's input or environment, stated with its fix."""


class ConfigError(CcsamError, ValueError):
    """An unknown config key, a bad value, or an unknown preset."""


class RunDirError(CcsamError):
    """A run folder that is missing, incomplete, or would be overwritten."""
