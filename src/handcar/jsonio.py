"""JSON without the `json` package: it drags in `re` and `enum`, which cost the hot paths ~13 ms.

Parsing uses CPython's C scanner (`_json.make_scanner`), writing uses `_json`'s C string escaper.
"""

from __future__ import annotations

import _json

from handcar.errors import ConfigError


class _ScannerContext:
    """The attributes the C scanner reads from its context (what json.JSONDecoder provides)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, str] = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return float(name.lower().replace("infinity", "inf"))


_scan = _json.make_scanner(_ScannerContext())  # type: ignore[arg-type]
_WHITESPACE = " \t\n\r"


def _line_col(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    col = pos - text.rfind("\n", 0, pos)
    return f"line {line} column {col}"


def loads(text: str | bytes, where: str = "JSON") -> object:
    """Parse one JSON document; errors name `where` and the position."""
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError as err:
            raise ConfigError(f"{where}: invalid UTF-8 at byte {err.start}") from None
    end = len(text)
    pos = 0
    while pos < end and text[pos] in _WHITESPACE:
        pos += 1
    try:
        value, pos = _scan(text, pos)
    except (StopIteration, ValueError, SystemError):
        # The C scanner can only raise JSONDecodeError once json.decoder is imported; it is
        # not on the fast path, so load it now and let it describe the error.
        raise ConfigError(f"{where}: {_describe_error(text)}") from None
    while pos < end and text[pos] in _WHITESPACE:
        pos += 1
    if pos != end:
        raise ConfigError(f"{where}: extra data after the JSON value at {_line_col(text, pos)}")
    return value


def _describe_error(text: str) -> str:
    import json

    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        return f"invalid JSON at {_line_col(text, err.pos)}: {err.msg}"
    return "invalid JSON"


_quote = _json.encode_basestring


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(value: object, indent: str | None = None, _level: int = 0) -> str:
    """Encode like Go's json.Marshal (compact) or json.MarshalIndent(v, "", indent)."""
    if isinstance(value, dict):
        if not value:
            return "{}"
        if indent is None:
            return "{" + ",".join(_quote(str(k)) + ":" + dumps(v) for k, v in value.items()) + "}"
        pad = "\n" + indent * (_level + 1)
        items = [
            pad + _quote(str(k)) + ": " + dumps(v, indent, _level + 1) for k, v in value.items()
        ]
        return "{" + ",".join(items) + "\n" + indent * _level + "}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        if indent is None:
            return "[" + ",".join(dumps(v) for v in value) + "]"
        pad = "\n" + indent * (_level + 1)
        items = [pad + dumps(v, indent, _level + 1) for v in value]
        return "[" + ",".join(items) + "\n" + indent * _level + "]"
    return _scalar(value)
