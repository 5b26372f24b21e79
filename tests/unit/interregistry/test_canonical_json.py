"""kit.jws canonical JSON: RFC 8785 test vectors, the large-integer extension, and the strict reader."""

import hashlib
import json
import unicodedata
import uuid
from typing import Any

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from kit.jws import MAX_SAFE_INTEGER, CanonicalizationError, audit_digest, body_sha256, canonicalize, loads

# RFC 8785 §3.2.3: property sorting by UTF-16 code units (the emoji's surrogates sort before U+FB33).
SORTING_INPUT = (
    '{"\\u20ac": "Euro Sign", "\\r": "Carriage Return", "\\ufb33": "Hebrew Letter Dalet With Dagesh",'
    ' "1": "One", "\\ud83d\\ude00": "Emoji: Grinning Face", "\\u0080": "Control",'
    ' "\\u00f6": "Latin Small Letter O With Diaeresis"}'
)
SORTING_ORDER = ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]

# RFC 8785 §3.2.2 input and §3.2.4 output: numbers as ECMAScript prints them, minimal string escaping.
SERIALIZATION_INPUT = (
    '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
    ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
    ' "literals": [null, true, false]}'
)
SERIALIZATION_OUTPUT = (
    '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
    '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
)


def test_rfc8785_property_sorting_vector() -> None:
    canonical = canonicalize(json.loads(SORTING_INPUT))
    assert list(json.loads(canonical)) == SORTING_ORDER
    # Only characters below U+0020 are escaped: U+0080 and the emoji are written as UTF-8.
    assert b'"\\r":"Carriage Return"' in canonical
    expected = (
        '{"\\r":"Carriage Return","1":"One","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis",'
        '"\u20ac":"Euro Sign","\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'
    )
    assert canonical == expected.encode("utf-8")


def test_rfc8785_serialization_vector() -> None:
    assert canonicalize(json.loads(SERIALIZATION_INPUT)) == SERIALIZATION_OUTPUT.encode("utf-8")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"b": 1, "a": 2}, b'{"a":2,"b":1}'),
        ({"a": {"d": [3, {"z": 1, "y": 2}], "c": None}}, b'{"a":{"c":null,"d":[3,{"y":2,"z":1}]}}'),
        ([], b"[]"),
        ({}, b"{}"),
        ([True, False, None], b"[true,false,null]"),
        (0, b"0"),
        (-1, b"-1"),
        (MAX_SAFE_INTEGER, b"9007199254740991"),
        (-MAX_SAFE_INTEGER, b"-9007199254740991"),
        ("é", '"é"'.encode()),
        ("tab\there\u001f", b'"tab\\there\\u001f"'),
        ("</script>", b'"</script>"'),  # no escaping of '/' or '<'
        ({"aa": 1, "a": 2, "b": 3, "A": 4}, b'{"A":4,"a":2,"aa":1,"b":3}'),
    ],
)
def test_canonical_forms(value: Any, expected: bytes) -> None:
    assert canonicalize(value) == expected


def test_no_unicode_normalisation() -> None:
    composed = "Zürich"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert canonicalize({"city": composed}) != canonicalize({"city": decomposed})


def test_integers_beyond_2_53_are_written_exactly() -> None:
    # 64-bit serials: strict JCS (rfc8785) refuses them; we write the digits and stay exact.
    big = 2**63 - 1
    with pytest.raises(rfc8785.IntegerDomainError):
        rfc8785.dumps(big)
    assert canonicalize({"last": big, "first": MAX_SAFE_INTEGER + 1}) == (
        b'{"first":9007199254740992,"last":9223372036854775807}'
    )
    assert loads(canonicalize([big, -big])) == [big, -big]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_identical_to_rfc8785_within_i_json(value: Any) -> None:
    assert canonicalize(value) == rfc8785.dumps(value)


@given(json_values)
def test_canonical_output_is_a_fixed_point(value: Any) -> None:
    once = canonicalize(value)
    assert canonicalize(loads(once)) == once


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), {1: "x"}, uuid.uuid4(), {"a": {1, 2}}, b"bytes", "\ud800"],
)
def test_values_that_are_not_signable_json(value: Any) -> None:
    with pytest.raises(CanonicalizationError):
        canonicalize(value)


@pytest.mark.parametrize(
    "text",
    ['{"a": 1, "a": 2}', '{"a": {"b": 1, "b": 1}}', "[NaN]", '{"x": Infinity}', "{", ""],
)
def test_the_strict_reader_refuses_ambiguous_json(text: str) -> None:
    with pytest.raises(CanonicalizationError):
        loads(text)


def test_digests_are_over_the_canonical_form() -> None:
    assert body_sha256({"b": 1, "a": [1, 2]}) == hashlib.sha256(b'{"a":[1,2],"b":1}').hexdigest()
    assert body_sha256({"a": [1, 2], "b": 1}) == body_sha256({"b": 1, "a": [1, 2]})
    message_id = uuid.UUID("0c2e7a52-5b1d-4c1e-9f4e-1d2b3c4d5e6f")
    digest = audit_digest([(118, message_id, "ab" * 32), (119, str(message_id), "cd" * 32)])
    expected_rows = f'[[118,"{message_id}","{"ab" * 32}"],[119,"{message_id}","{"cd" * 32}"]]'
    assert digest == hashlib.sha256(expected_rows.encode()).hexdigest()
    assert audit_digest([]) == hashlib.sha256(b"[]").hexdigest()
    swapped = audit_digest([(119, message_id, "cd" * 32), (118, message_id, "ab" * 32)])
    assert swapped != digest, "order is part of the digest"
