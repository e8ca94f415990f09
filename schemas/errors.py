"""The project's error for a user's mistake: a message that says what to change.

`unisim` prints a `UserError` as one line (exit status 2); anything else that escapes a command is a bug of ours and
is printed with its traceback and a request to report it (`unisim/cli/__init__.py`). It subclasses ValueError, so
code that catches ValueError keeps catching it. Folders whose errors reach users subclass it (`MixtureError`,
`LayoutError`, `TargetError`, …); fileio, below schemas, raises OSError and ValueError, which the CLI reads as the
user's when they come from the project's own `raise`.
"""


class UserError(ValueError):
    """A mistake in what the user gave (a flag, a path, a config, a mixture): the message says what to change."""
