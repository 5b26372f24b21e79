"""The report of one run (INTERREGISTRY §11): a `conformance_run_id`, what ran against what, every case's
status with its checks, hygiene and evidence (HTTP status, problem code, message ids), the totals, and the
overall `result`, written as JSON and printed as a table.

`result` is `pass` only when every mandatory case of §11 ran and passed — the report a production
`activate` will ask for; `fail` when a mandatory case failed or broke; otherwise `incomplete` (mandatory
cases not implemented yet, skipped, partial or not selected). Exit codes: 0 no mandatory case failed,
1 a mandatory case failed, 2 the run could not start, 3 incomplete with `--require-complete`.
"""

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conformance.kit.runner import CASES, FAILING, CaseResult, Status

__all__ = ["EXIT_FAILED", "EXIT_INCOMPLETE", "EXIT_OK", "EXIT_UNUSABLE", "Report"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNUSABLE = 2
EXIT_INCOMPLETE = 3


@dataclass
class Report:
    conformance_run_id: str
    mode: str
    ir_url: str
    registry_id: str
    driver_url: str | None
    started_at: str
    finished_at: str = ""
    preflight: dict[str, Any] = field(default_factory=dict)
    cases: list[CaseResult] = field(default_factory=list)
    #: The IR's answer to the posted report: its own verdict (`result`, `findings`), or why it is not stored.
    stored: dict[str, Any] | None = None

    def case(self, number: int) -> CaseResult:
        for result in self.cases:
            if result.number == number:
                return result
        raise KeyError(number)

    @property
    def totals(self) -> dict[str, int]:
        counted = Counter(str(result.status) for result in self.cases)
        return {str(status): counted.get(str(status), 0) for status in Status}

    @property
    def result(self) -> str:
        if any(result.mandatory and result.status in FAILING for result in self.cases):
            return "fail"
        passed = {result.number for result in self.cases if result.status is Status.PASSED}
        mandatory = {number for number, made in CASES.items() if made.mandatory}
        return "pass" if mandatory <= passed else "incomplete"

    def exit_code(self, *, require_complete: bool = False) -> int:
        outcome = self.result
        if outcome == "fail":
            return EXIT_FAILED
        if outcome == "incomplete" and require_complete:
            return EXIT_INCOMPLETE
        return EXIT_OK

    def as_json(self) -> dict[str, Any]:
        mandatory = [result for result in self.cases if result.mandatory]
        return {
            "conformance_run_id": self.conformance_run_id,
            "protocol": "irx",
            "version": "1.0",
            "mode": self.mode,
            "ir_url": self.ir_url,
            "registry_id": self.registry_id,
            "driver_url": self.driver_url,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "result": self.result,
            "totals": self.totals,
            "mandatory": {
                "cases": len(mandatory),
                "passed": sum(result.status is Status.PASSED for result in mandatory),
                "failed": [result.number for result in mandatory if result.status in FAILING],
                "not_passed": [result.number for result in mandatory if result.status is not Status.PASSED],
            },
            "preflight": self.preflight,
            "cases": [result.as_json() for result in self.cases],
        } | ({"stored_at_ir": self.stored} if self.stored is not None else {})

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_json(), indent=2, ensure_ascii=False) + "\n")

    def table(self) -> str:
        """One line per case, then the totals: what an operator reads first."""
        lines = [
            f"IRX conformance run {self.conformance_run_id} — registry {self.registry_id}, mode {self.mode}, {self.ir_url}",
            f"{'case':>4}  {'M':1}  {'status':<15}  {'title':<58}  detail",
        ]
        for result in self.cases:
            detail = result.reason.replace("\n", " ")
            lines.append(
                f"{result.number:>4}  {'M' if result.mandatory else ' '}  {result.status!s:<15}  "
                f"{result.title[:58]:<58}  {detail[:160]}"
            )
        totals = ", ".join(f"{count} {status}" for status, count in self.totals.items() if count)
        lines.append(f"result: {self.result} ({totals})")
        if self.stored is not None and self.stored.get("stored"):
            findings = self.stored.get("findings") or []
            lines.append(
                f"conformance_run_id: {self.conformance_run_id} — stored at the IR, its verdict:"
                f" {self.stored.get('result')}" + (f" ({len(findings)} findings)" if findings else "")
            )
            lines.extend(f"  IR finding: {finding}" for finding in findings[:40])
        elif self.stored is not None:
            lines.append(
                f"conformance_run_id: {self.conformance_run_id} — NOT stored at the IR: {self.stored.get('error')}"
            )
        else:
            lines.append(f"conformance_run_id: {self.conformance_run_id} (not posted to the IR)")
        return "\n".join(lines)
