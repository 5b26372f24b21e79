"""IRX version rules (INTERREGISTRY §3): 1001 for another major, 1002 for a minor above ours, highest common."""

import pytest

from contracts.interregistry import (
    CURRENT_VERSION,
    SUPPORTED_VERSIONS,
    IrxCode,
    IrxVersionInfo,
    negotiate_version,
    parse_version,
    version_refusal,
)


@pytest.mark.parametrize(
    ("declared", "ours", "expected"),
    [
        ("1.0", ["1.0"], None),
        ("1.0", ["1.2"], None),  # a lower minor is read
        ("1.2", ["1.2"], None),
        ("1.3", ["1.2"], IrxCode.MINOR_VERSION_ABOVE_OURS),
        ("1.9", ["1.0"], IrxCode.MINOR_VERSION_ABOVE_OURS),
        ("2.0", ["1.0"], IrxCode.MAJOR_VERSION_UNSUPPORTED),
        ("0.9", ["1.0"], IrxCode.MAJOR_VERSION_UNSUPPORTED),
        ("2.0", ["1.4", "2.0"], None),  # a new major runs beside the old one
        ("1.4", ["1.4", "2.0"], None),
        ("2.1", ["1.4", "2.0"], IrxCode.MINOR_VERSION_ABOVE_OURS),
        ("1", ["1.0"], IrxCode.MALFORMED_MESSAGE),
        ("1.0.0", ["1.0"], IrxCode.MALFORMED_MESSAGE),
        ("v1.0", ["1.0"], IrxCode.MALFORMED_MESSAGE),
        ("01.0", ["1.0"], IrxCode.MALFORMED_MESSAGE),
        ("١.٠", ["1.0"], IrxCode.MALFORMED_MESSAGE),  # Arabic-Indic digits are not decimal here
        (None, ["1.0"], IrxCode.MALFORMED_MESSAGE),
        (1.0, ["1.0"], IrxCode.MALFORMED_MESSAGE),
    ],
)
def test_version_refusals(declared: object, ours: list[str], expected: IrxCode | None) -> None:
    assert version_refusal(declared, ours) is expected


@pytest.mark.parametrize(
    ("theirs", "ours", "expected"),
    [
        (["1.0"], ["1.0"], "1.0"),
        (["1.0", "1.1"], ["1.0"], "1.0"),
        (["1.3"], ["1.0", "1.1"], "1.1"),  # they read every 1.k up to 1.3
        (["1.1"], ["1.4"], "1.1"),  # we never write a field they do not know
        (["1.0", "2.0"], ["1.2", "2.1"], "2.0"),  # highest common major wins
        (["2.5"], ["1.0"], None),
        (["junk", "1.0"], ["1.0"], "1.0"),
        ([], ["1.0"], None),
    ],
)
def test_negotiation_picks_the_highest_version_both_read(
    theirs: list[str], ours: list[str], expected: str | None
) -> None:
    assert negotiate_version(theirs, ours) == expected


def test_this_build_reads_what_it_writes() -> None:
    assert CURRENT_VERSION in SUPPORTED_VERSIONS
    assert version_refusal(CURRENT_VERSION) is None
    assert negotiate_version([CURRENT_VERSION]) == CURRENT_VERSION
    info = IrxVersionInfo()
    assert info.current == CURRENT_VERSION and info.supported == list(SUPPORTED_VERSIONS)
    assert info.model_dump() == {"current": "1.0", "supported": ["1.0"], "deprecated": [], "sunset": {}}


def test_parse_version() -> None:
    assert parse_version("1.0") == (1, 0)
    assert parse_version("12.34") == (12, 34)
    assert parse_version("1.10") > parse_version("1.9")
    with pytest.raises(ValueError, match=r"major\.minor"):
        parse_version("1.x")
