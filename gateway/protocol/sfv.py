"""RFC 8941 structured field values: the subset RFC 9421 and RFC 9530 need (pure).

Dictionaries, inner lists and items with parameters; integers, decimals, strings, tokens, byte sequences and
booleans. Strict: anything the RFC's parsing algorithm rejects is rejected, and duplicate dictionary keys and
parameters are refused too (a second copy would be ambiguous about what was signed).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from typing import TypeAlias


class Token(str):
    """An RFC 8941 token (serialised without quotes)."""

    __slots__ = ()


BareItem: TypeAlias = int | float | str | bytes | bool
Params: TypeAlias = dict[str, BareItem]
Item: TypeAlias = tuple[BareItem, Params]
InnerList: TypeAlias = tuple[list[Item], Params]


class SFError(ValueError):
    """A structured field does not parse."""


_KEY_RE = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN_RE = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_NUMBER_RE = re.compile(r"-?[0-9]+(\.[0-9]*)?")
_B64_RE = re.compile(r"[A-Za-z0-9+/=]*")
# RFC 8941 3.3.3: printable ASCII except '"' and '\', or the escapes \" and \\.
_STRING_RE = re.compile(r'"((?:[ !#-\[\]-~]|\\["\\])*)"')
_UNESCAPE_RE = re.compile(r'\\(["\\])')
_PRINTABLE_RE = re.compile(r"[ -~]*")


class _Parser:
    __slots__ = ("i", "s")

    def __init__(self, s: str) -> None:
        self.s = s
        self.i = 0

    def fail(self, what: str) -> SFError:
        return SFError(f"{what} at offset {self.i}")

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def ows(self) -> None:
        while self.peek() in (" ", "\t") and self.peek():
            self.i += 1

    def sp(self) -> None:
        while self.peek() == " ":
            self.i += 1

    def key(self) -> str:
        m = _KEY_RE.match(self.s, self.i)
        if not m:
            raise self.fail("expected a key")
        self.i = m.end()
        return m.group()

    def bare_item(self) -> BareItem:
        c = self.peek()
        if c == '"':
            return self.string()
        if c == ":":
            return self.byte_sequence()
        if c == "?":
            v = self.s[self.i + 1:self.i + 2]
            if v not in ("0", "1"):
                raise self.fail("expected ?0 or ?1")
            self.i += 2
            return v == "1"
        if c == "-" or c.isdigit():
            return self.number()
        m = _TOKEN_RE.match(self.s, self.i)
        if m:
            self.i = m.end()
            return Token(m.group())
        raise self.fail("expected an item")

    def number(self) -> int | float:
        m = _NUMBER_RE.match(self.s, self.i)
        if not m:
            raise self.fail("expected a number")
        text = m.group()
        digits = text.lstrip("-")
        if m.group(1) is None:
            if len(digits) > 15:
                raise self.fail("integer has more than 15 digits")
            self.i = m.end()
            return int(text)
        whole, frac = digits.split(".")
        if len(whole) > 12 or not 1 <= len(frac) <= 3:
            raise self.fail("malformed decimal")
        self.i = m.end()
        return float(text)

    def string(self) -> str:
        m = _STRING_RE.match(self.s, self.i)
        if not m:
            raise self.fail("malformed string")
        self.i = m.end()
        text = m.group(1)
        return _UNESCAPE_RE.sub(r"\1", text) if "\\" in text else text

    def byte_sequence(self) -> bytes:
        end = self.s.find(":", self.i + 1)
        if end < 0:
            raise self.fail("unterminated byte sequence")
        text = self.s[self.i + 1:end]
        if not _B64_RE.fullmatch(text):
            raise self.fail("invalid base64 in byte sequence")
        try:
            value = base64.b64decode(text, validate=True)
        except binascii.Error as e:
            raise self.fail(f"invalid base64 in byte sequence ({e})") from None
        self.i = end + 1
        return value

    def params(self) -> Params:
        out: Params = {}
        while self.peek() == ";":
            self.i += 1
            self.sp()
            k = self.key()
            v: BareItem = True
            if self.peek() == "=":
                self.i += 1
                v = self.bare_item()
            if k in out:
                raise self.fail(f"duplicate parameter {k!r}")
            out[k] = v
        return out

    def item(self) -> Item:
        v = self.bare_item()
        return v, self.params()

    def item_or_inner_list(self) -> Item | InnerList:
        if self.peek() != "(":
            return self.item()
        self.i += 1
        items: list[Item] = []
        while True:
            self.sp()
            if self.peek() == ")":
                self.i += 1
                return items, self.params()
            items.append(self.item())
            if self.peek() not in (" ", ")"):
                raise self.fail("expected a space or ')' in inner list")

    def dictionary(self) -> dict[str, Item | InnerList]:
        out: dict[str, Item | InnerList] = {}
        self.sp()
        if self.i == len(self.s):
            return out
        while True:
            k = self.key()
            if k in out:
                raise self.fail(f"duplicate dictionary key {k!r}")
            if self.peek() == "=":
                self.i += 1
                out[k] = self.item_or_inner_list()
            else:
                out[k] = (True, self.params())
            self.ows()
            if self.i == len(self.s):
                return out
            if self.peek() != ",":
                raise self.fail("expected ','")
            self.i += 1
            self.ows()
            if self.i == len(self.s):
                raise self.fail("trailing ','")


def parse_dictionary(text: str) -> dict[str, Item | InnerList]:
    """Parse an RFC 8941 dictionary field value.

    Raises:
        SFError: the value is not a valid dictionary.
    """
    p = _Parser(text.rstrip(" "))
    return p.dictionary()


def _ser_string(value: str) -> str:
    if not _PRINTABLE_RE.fullmatch(value):
        raise SFError("string holds a character outside printable ASCII")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def serialize_bare_item(value: BareItem) -> str:
    """Serialise one bare item (RFC 8941 4.1.3).

    Raises:
        SFError: the value cannot be serialised.
    """
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        if abs(value) > 999_999_999_999_999:
            raise SFError("integer out of range")
        return str(value)
    if isinstance(value, float):
        text = f"{round(value, 3):.3f}".rstrip("0")
        return text + "0" if text.endswith(".") else text
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode("ascii") + ":"
    if isinstance(value, Token):
        if not _TOKEN_RE.fullmatch(value):
            raise SFError(f"invalid token {value!r}")
        return str(value)
    return _ser_string(value)


def serialize_params(params: Mapping[str, BareItem]) -> str:
    """Serialise parameters (RFC 8941 4.1.1.2).

    Raises:
        SFError: a key or value cannot be serialised.
    """
    out = []
    for k, v in params.items():
        if not _KEY_RE.fullmatch(k):
            raise SFError(f"invalid key {k!r}")
        out.append(f";{k}" if v is True else f";{k}={serialize_bare_item(v)}")
    return "".join(out)


def serialize_item(value: BareItem, params: Mapping[str, BareItem]) -> str:
    """Serialise an item with parameters.

    Raises:
        SFError: the item cannot be serialised.
    """
    return serialize_bare_item(value) + serialize_params(params)


def serialize_inner_list(items: Iterable[Item], params: Mapping[str, BareItem]) -> str:
    """Serialise an inner list with parameters.

    Raises:
        SFError: a member cannot be serialised.
    """
    return "(" + " ".join(serialize_item(v, p) for v, p in items) + ")" + serialize_params(params)
