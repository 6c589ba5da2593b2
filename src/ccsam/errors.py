"""Errors that the command line reports as one line (``ccsam: error: ...``) instead of a traceback.

Each carries the process exit status the CLI returns for it: 2 for bad input, a bad config or a bad
file (the user can fix it), 3 for a run that diverged, 130 for an interrupted run. Anything else that
escapes is a runtime failure (status 1).
"""

EXIT_RUNTIME = 1
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130


class CcsamError(Exception):
    """A problem with the user's input or environment, stated with its fix."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(CcsamError, ValueError):
    """An unknown config key, a bad value, or an unknown preset."""


class RunDirError(CcsamError):
    """A run folder that is missing, incomplete, or would be overwritten."""


class DataFileError(CcsamError, ValueError):
    """A data-set file that is truncated, corrupt, or laid out differently from its format."""


class DivergenceError(CcsamError):
    """The training loss became NaN or infinite (``runtime.on_nonfinite=stop``)."""

    exit_code = EXIT_DIVERGED


class InterruptedRun(CcsamError):
    """Ctrl-C (or SIGTERM) during a run; the message says how to continue it."""

    exit_code = EXIT_INTERRUPTED
