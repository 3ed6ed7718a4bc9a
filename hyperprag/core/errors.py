"""The project's user-error type: bad input, not a bug.

Every error a user can cause and fix (a malformed record, an unknown model name, a folder that is not a
hypernetwork or adapter store, a bad config) derives from `InputError`, and its message already says
what is wrong and where (file, line, field). The console script prints such an error as one line,
``hyperprag: error: <message>``, instead of a traceback (hyperprag/cli.py; `--debug` shows it).
"""

from __future__ import annotations


class InputError(Exception):
    """Bad input from the user; the message names the file, line or field and what to do."""
