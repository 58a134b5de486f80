"""The one base class for errors a user can act on.

Every library error that stems from bad input (a file, a flag, a model the
toolchain cannot deploy) derives from :class:`InflorError`; its message names
the problem and the fix. The CLI prints such errors without a traceback and
exits non-zero; anything else is a bug and keeps its traceback.
"""


class InflorError(ValueError):
    """Bad input: the message says what is wrong and how to fix it."""


class ExportError(InflorError):
    """A model cannot be translated to or from the IR; the message says why and what to change."""
