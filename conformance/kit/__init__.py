"""The IRX conformance kit (INTERREGISTRY §11, issue 8): numbered cases with their pass rules, run against the
IR with a registry's sandbox client and key, a hygiene check of the IR's message log after every case, and a
JSON report with a `conformance_run_id`. Entry point: `python -m conformance --mode registry|ir …`
(docs/conformance.md).
"""

from conformance.kit.config import ConfigError, KitConfig
from conformance.kit.report import Report
from conformance.kit.run import RunRefused, run_kit
from conformance.kit.runner import CASES, Case, CaseResult, Status

__all__ = [
    "CASES",
    "Case",
    "CaseResult",
    "ConfigError",
    "KitConfig",
    "Report",
    "RunRefused",
    "Status",
    "run_kit",
]
