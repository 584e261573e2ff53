"""What the user must fix.

A stage that raises :class:`UserError` exits 2 with its one-line message and no traceback
(``ltcl.stage.run_stage``); any other exception is a bug in ltcl and prints its traceback (exit 1).
Raise it for bad params, bad or missing input files and impossible settings, phrased so that the
message says what to change.  It is a ``ValueError`` (and :class:`MissingInputError` also a
``FileNotFoundError``) so that callers of the library can catch the usual types.
"""


class UserError(ValueError):
    """Bad input or settings; the message names the key, file or value and what is allowed."""


class MissingInputError(UserError, FileNotFoundError):
    """An input file or folder the user pointed to (or a stage before should have written) is missing."""
