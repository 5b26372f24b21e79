"""The ARS's check codes (`GET /v1/ars/checks`) and a collector of failed checks.

Codes the ledger also decides keep the ledger's code and title (A04, A05, A06, T05, T05A, T06, T07, T08, T10):
the ARS runs them first so a refusal never reserves anything, and the IR runs them again when it creates the
ITMOs. `M..` codes are the ARS's own; `3002` is the IR's inter-registry code for a registry that cannot receive. Codes are stable: never renumbered, never reused.
"""

from contracts.problems import CheckResult
from contracts.transactions import CheckDefinition

__all__ = ["CATALOGUE", "Failures"]

_FT = "first_transfer"
_APPLY = "apply"
_ISSUE = "issuance"


def _check(code: str, title: str, *applies_to: str) -> CheckDefinition:
    return CheckDefinition(code=code, title=title, applies_to=list(applies_to), reference="docs/ars.md")


CATALOGUE: tuple[CheckDefinition, ...] = (
    _check(
        "A04", "The Party section is open (not suspended, closing or closed) and uses the ARS", _FT, _APPLY
    ),
    _check("A05", "The destination account exists and is open", _FT),
    _check("A06", "The destination account is a holding account", _FT),
    _check(
        "T05",
        "The authorization's purposes cover what is asked (NDC transfer, OIMP use, OP cancellation)",
        _FT,
    ),
    _check("T05A", "The acquiring Party is among the authorization's authorized Parties", _FT),
    _check("T06", "Within the authorization's authorized quantity", _FT, _APPLY, _ISSUE),
    _check("T07", "Both Parties participate in the cooperative approach", _FT),
    _check("T08", "Vintage from 2021 and not in the future", _FT),
    _check("T10", "The destination Party section is open and accepts units", _FT),
    _check("M01", "The authorization exists in the Party's ARS", _FT, _ISSUE),
    _check("M02", "The authorization is not revoked", _FT, _APPLY, _ISSUE),
    _check(
        "M03",
        "Enough MOs in the needed state: pending ones the authorization covers (apply), authorized ones "
        "not reserved nor first transferred (first transfer)",
        _FT,
        _APPLY,
    ),
    _check("M04", "The MOs' vintage lies in the authorization's timeframe", _FT, _APPLY, _ISSUE),
    _check("M05", "The using or cancelling entity is among the authorization's authorized entities", _FT),
    _check(
        "M06",
        "The request fits the first transfer definition (NDC: another Party's account; OIMP Authorisation or "
        "Issuance: the Party's own; Use or Cancellation: use or cancellation)",
        _FT,
    ),
    _check(
        "M07",
        "The MOs are of the authorization's cooperative approach, metric, sectors and activity types",
        _APPLY,
        _ISSUE,
    ),
    _check("M08", "The using or cancelling entity is an entity the Party authorized (AEF Table 5)", _FT),
    _check(
        "3002",
        "The connected registry named by to_registry is known to the IR and may receive transfers "
        "(INTERREGISTRY §5.3; the IR's code)",
        _FT,
    ),
)

_TITLES = {check.code: check.title for check in CATALOGUE}
_ORDER = {check.code: index for index, check in enumerate(CATALOGUE)}


class Failures:
    """Collects failed checks, each code once, in catalogue order."""

    def __init__(self) -> None:
        self._messages: dict[str, str] = {}

    def add(self, code: str, message: str | None = None) -> None:
        assert code in _TITLES, f"unknown check code {code}"
        self._messages.setdefault(code, message or _TITLES[code])

    def __bool__(self) -> bool:
        return bool(self._messages)

    def results(self) -> list[CheckResult]:
        return [
            CheckResult(code=code, message=message)
            for code, message in sorted(self._messages.items(), key=lambda item: _ORDER[item[0]])
        ]
