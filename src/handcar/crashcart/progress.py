"""A one-line progress bar on stderr, drawn only when stderr is a terminal."""

from __future__ import annotations

import os
import sys
import time


class Progress:
    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self.enabled = enabled and sys.stderr.isatty()
        self._last_draw = 0.0

    def advance(self, steps: int = 1) -> None:
        self.done = min(self.done + steps, self.total)
        # Redrawing at most 20 times a second keeps a fast build from being slowed by the bar.
        now = time.monotonic()
        if now - self._last_draw >= 0.05 or self.done == self.total:
            self._last_draw = now
            self.draw()

    def draw(self) -> None:
        if not self.enabled:
            return
        try:
            columns = os.get_terminal_size(sys.stderr.fileno()).columns
        except OSError:
            columns = 80
        text = f" {self.done}/{self.total} {self.label}"
        width = max(10, min(40, columns - len(text) - 3))
        filled = width * self.done // self.total
        sys.stderr.write("\r[" + "#" * filled + "." * (width - filled) + "]" + text + "\x1b[K")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
