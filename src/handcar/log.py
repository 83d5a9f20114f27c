"""runc-compatible logging: logrus text or JSON lines, to --log FILE or to stderr.

containerd parses the JSON lines' `time` as RFC 3339 and shows the last error; podman parses the
whole file as JSON values, so every record is exactly one line.
"""

from __future__ import annotations

import os
import time

from handcar import jsonio

_LEVELS = {"debug": 0, "info": 1, "warning": 2, "error": 3}


class _Sink:
    __slots__ = ("path", "json", "min_level", "fd")

    def __init__(self) -> None:
        self.path: str | None = None
        self.json = False
        self.min_level = _LEVELS["info"]
        self.fd = 2


_sink = _Sink()


def configure(path: str | None, log_format: str, debug: bool) -> None:
    _sink.path = path
    _sink.json = log_format == "json"
    _sink.min_level = _LEVELS["debug" if debug else "info"]
    if path:
        _sink.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


def is_debug() -> bool:
    return _sink.min_level == _LEVELS["debug"]


def _timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


_BARE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._/@^+")


def _logfmt_value(text: str) -> str:
    """logrus quotes a value unless every character is 'safe'."""
    if text and all(c in _BARE_CHARS for c in text):
        return text
    return jsonio.dumps(text)


def format_record(level: str, msg: str, as_json: bool) -> str:
    if as_json:
        return jsonio.dumps({"level": level, "msg": msg, "time": _timestamp()}) + "\n"
    return f"time={_logfmt_value(_timestamp())} level={level} msg={_logfmt_value(msg)}\n"


def log(level: str, msg: str) -> None:
    if _LEVELS[level] < _sink.min_level:
        return
    line = format_record(level, msg, _sink.json)
    try:
        os.write(_sink.fd, line.encode())
    except OSError:
        pass


def debug(msg: str) -> None:
    log("debug", msg)


def info(msg: str) -> None:
    log("info", msg)


def warning(msg: str) -> None:
    log("warning", msg)


def fatal(msg: str) -> None:
    """Report the error that ends this call, the way runc does.

    With --log the record goes to the log file and the bare message to stderr; without it the
    logrus text record goes to stderr.
    """
    log("error", msg)
    if _sink.path is not None:
        os.write(2, (msg + "\n").encode())
