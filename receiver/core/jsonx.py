"""The one parser of JSON and numbers from outside, and the one JSON encoder.

Every JSON body that comes from outside (webhooks, poll answers, admin API bodies, cursors, the
CLI's `--metadata`) is read by `loads`, and every number a person or a peer types (`?limit=`,
cursors, delivery ids, CLI numbers) by `whole_number` or `decimal`. One set of rules:

* Strict JSON only: `NaN`/`Infinity`, invalid UTF-8, an unpaired UTF-16 surrogate escape
  (`"\\ud800"`, valid JSON but no text a database or a sink can hold), control characters in
  strings and nesting deeper than 1024 are a `JSONError`. A leading UTF-8 byte order mark is
  ignored (RFC 8259 allows it; Python's json took it before orjson did the parsing).
* Integers within 64 bits stay integers; larger ones become floats (orjson's rule).
* A number that does not fit a finite double (`1e400`, a 400-digit integer) follows the
  caller's policy: `NULL` reads it as null (for what a provider sends: the raw bytes are kept,
  so nothing verified is lost, and no `Infinity` reaches a sink), `REFUSE` raises `OutOfRange`
  naming where it is (for admin bodies: the caller can fix it).

orjson does the work: it is strict, fast and stops with an error at an overflowing number.
Only then is the text parsed again by Python's json with hooks that mark such numbers, and the
marks are settled by the policy.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

import orjson

Policy = Literal["null", "refuse"]
NULL: Policy = "null"  # an out-of-range number reads as null
REFUSE: Policy = "refuse"  # an out-of-range number is an OutOfRange error

MAX_DEPTH = 1024  # orjson's limit; the fallback parser stops at Python's recursion limit
_OVERFLOW = "number is infinity when parsed as double"
_BOM = b"\xef\xbb\xbf"
_I64_MIN, _U64_MAX = -(2**63), 2**64 - 1


class JSONError(ValueError):
    """The input is not strict JSON; the message says what is wrong and where."""


class OutOfRange(JSONError):
    """A number that does not fit a finite double, under the REFUSE policy."""

    def __init__(self, path: str, number: str) -> None:
        shown = number if len(number) <= 24 else f"{number[:20]}… ({len(number)} characters)"
        where = path or "the value"
        super().__init__(f"{where}: the number {shown} does not fit a 64-bit float")
        self.path = path  # `metadata.sizes[2]`; "" for the document itself


def loads(data: bytes | str, *, numbers: Policy) -> Any:
    """Parse strict JSON; out-of-range numbers by the `numbers` policy. Raises JSONError only."""
    if isinstance(data, str):
        data = data.removeprefix("\ufeff")
    elif data.startswith(_BOM):
        data = data[3:]
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if not str(exc).startswith(_OVERFLOW):
            raise JSONError(_describe(exc)) from None
    return _settle(_parse_marking_overflow(data), numbers)


def _describe(exc: orjson.JSONDecodeError) -> str:
    return f"{exc.msg} at character {exc.pos}"


class _Overflow:
    """Stands for a number that does not fit a finite double, until the policy settles it."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _float(text: str) -> float | _Overflow:
    value = float(text)
    return value if math.isfinite(value) else _Overflow(text)


def _int(text: str) -> int | float | _Overflow:
    if len(text) <= 21:  # no int() of a huge digit string: it costs quadratic time
        value = int(text)
        if _I64_MIN <= value <= _U64_MAX:
            return value
    return _float(text)


def _constant(name: str) -> Any:
    raise JSONError(f"{name} is not JSON")


def _parse_marking_overflow(data: bytes | str) -> Any:
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        raise JSONError("nested too deeply") from None
    except UnicodeDecodeError:
        raise JSONError("not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise JSONError(f"{exc.msg} at character {exc.pos}") from None


def _settle(value: Any, numbers: Policy) -> Any:
    """Replace the overflow marks by null, or raise OutOfRange naming the first; refuse lone
    surrogates (orjson does, Python's json does not). Iterative: depth is bounded by the
    parser, not by the recursion limit."""
    root = [value]
    stack: list[tuple[Any, Any, str]] = [(root, 0, "")]
    while stack:
        container, key, path = stack.pop()
        item = container[key]
        if isinstance(item, _Overflow):
            if numbers == REFUSE:
                raise OutOfRange(path, item.text)
            container[key] = None
        elif isinstance(item, str):
            _text(item)
        elif isinstance(item, dict):
            for name in item:
                _text(name)
                stack.append((item, name, f"{path}.{name}" if path else name))
        elif isinstance(item, list):
            stack.extend((item, i, f"{path}[{i}]") for i in range(len(item)))
    return root[0]


def _text(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise JSONError(
            "a string holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), "
            "which is not Unicode text"
        ) from None


def dumps(value: Any) -> bytes:
    """Compact JSON bytes (UTF-8, non-ASCII kept). Never writes `NaN` or `Infinity`: orjson
    writes a non-finite float as null (the store refuses them earlier, see `require_finite`).
    A value JSON cannot carry (an integer beyond 64 bits, a non-string key, a lone surrogate)
    is a JSONError."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise JSONError(f"cannot be written as JSON: {exc}") from None


def require_finite(value: Any, name: str) -> None:
    """Raise ValueError naming the place of the first NaN or infinite float in `value` (a
    number, or dicts and lists of them): what strict JSON cannot carry must not be stored."""
    if _all_finite(value):  # the usual case, without building a path for every value
        return
    stack: list[tuple[Any, str]] = [(value, name)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"{path} is {item}, which JSON cannot carry; it was not stored")
        if isinstance(item, dict):
            stack.extend((v, f"{path}.{k}") for k, v in item.items())
        elif isinstance(item, list | tuple):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))


def _all_finite(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is int or kind is bool or item is None:
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return True


# -- numbers typed by people and peers -------------------------------------------------------


class NumberInvalid(ValueError):
    """A parameter that is not a number in range; the message names the parameter."""


_DIGITS = re.compile(r"[0-9]{1,19}", re.ASCII)
_DECIMAL = re.compile(r"[0-9]{1,15}(\.[0-9]{1,9})?", re.ASCII)


def whole_number(name: str, text: str, minimum: int, maximum: int) -> int:
    """`text` as an integer from `minimum` to `maximum`: ASCII digits only (str.isdigit()
    takes `²` and `٣`, int() takes `1_000` and spaces), at most 19 of them."""
    if not _DIGITS.fullmatch(text) or not minimum <= int(text) <= maximum:
        raise NumberInvalid(f"{name} must be a whole number from {minimum} to {maximum}")
    return int(text)


def decimal(name: str, text: str, minimum: float, maximum: float) -> float:
    """`text` as a number from `minimum` to `maximum`: ASCII digits with an optional fraction
    (float() also takes `nan`, `inf`, `1e999` and Arabic-Indic digits)."""
    if not _DECIMAL.fullmatch(text) or not minimum <= float(text) <= maximum:
        raise NumberInvalid(f"{name} must be a number from {minimum:g} to {maximum:g}")
    return float(text)
