"""gateway.protocol.sfv: RFC 8941 structured fields, checked against an independent parser (http_sfv)."""

from __future__ import annotations

import http_sfv
import pytest

from gateway.protocol import sfv


def _ours(text: str) -> str:
    out = []
    for key, (value, params) in sfv.parse_dictionary(text).items():
        if isinstance(value, list):
            out.append(f"{key}={sfv.serialize_inner_list(value, params)}")
        elif value is True:
            out.append(key + sfv.serialize_params(params))
        else:
            out.append(f"{key}={sfv.serialize_item(value, params)}")
    return ", ".join(out)


@pytest.mark.parametrize(
    "text",
    [
        'xroad=("@method" "@path" "@query");created=1618884473;keyid="test-key";alg="ecdsa-p256-sha256"',
        'sig1=("@status" "signature";req;key="xroad");created=1;tag="x"',
        "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:, sha-512=:AAAA:",
        'a=1, b="x\\"y\\\\z", c=?0, d, e=tok/en:1, f=-12.5;q=0.125, g=()',
        "a=(  1  2 );x, b=?1;y=*t",
        "a=1 ,  b=2",
        "  a=1",
    ],
)
def test_sf_parser_agrees_with_http_sfv(text: str) -> None:
    theirs = http_sfv.Dictionary()
    theirs.parse(text.encode())
    assert _ours(text) == str(theirs)


@pytest.mark.parametrize(
    "text",
    [
        "a=",
        "a=(1",
        'a="x',
        'a="\\x"',
        "a=:AB!:",
        "A=1",
        "a=1,",
        "a=1 b=2",
        "a=1234567890123456",
        "a=1.2345",
        "a=?2",
        'a="\u00e9"',
        "a=(1,2)",
        "a=1;B=2",
    ],
)
def test_sf_parser_rejects_like_http_sfv(text: str) -> None:
    with pytest.raises(ValueError):
        http_sfv.Dictionary().parse(text.encode())
    with pytest.raises(sfv.SFError):
        sfv.parse_dictionary(text)


def test_sf_empty_dictionary() -> None:
    assert sfv.parse_dictionary("") == {}
    assert sfv.parse_dictionary("   ") == {}


def test_sf_duplicate_keys_refused() -> None:
    with pytest.raises(sfv.SFError, match="duplicate dictionary key 'a'"):
        sfv.parse_dictionary("a=1, a=2")
    with pytest.raises(sfv.SFError, match="duplicate parameter 'k'"):
        sfv.parse_dictionary("a=1;k=1;k=2")
