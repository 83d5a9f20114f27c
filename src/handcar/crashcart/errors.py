"""The one exception crashcart turns into a one-line message and exit status 1 (or 125)."""

from __future__ import annotations


class CrashcartError(Exception):
    """A failure the user can act on; its text is the whole message."""
