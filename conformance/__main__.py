"""`python -m conformance --mode registry|ir …`: run the IRX conformance kit (INTERREGISTRY §11) against an IR
gateway with a registry's sandbox client and signing key, print the table, write the JSON report.
See docs/conformance.md.
"""

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx

from conformance.kit import CASES, ConfigError, KitConfig, run_kit
from conformance.kit.config import (
    MODES,
    load_client_file,
    load_jwks,
    load_private_jwk,
    secret_from_environment,
)
from conformance.kit.driver import terminal_operator
from conformance.kit.report import EXIT_UNUSABLE

__all__ = ["main", "run_cli"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m conformance",
        description="IRX 1.0 conformance kit: run the numbered cases of INTERREGISTRY §11 against the IR sandbox.",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        required=True,
        help="registry: a national registry tests itself; ir: the IR's CI with the simulator",
    )
    parser.add_argument(
        "--ir-url", required=True, help="base URL of the IR gateway, e.g. https://sandbox.example.org"
    )
    parser.add_argument("--registry-id", required=True, help="the registry under test, e.g. CHE01")
    parser.add_argument("--client-id", help="the registry's sandbox OAuth2 client id")
    parser.add_argument(
        "--client-secret-file",
        type=Path,
        help="file holding the client secret (else $CONFORMANCE_CLIENT_SECRET)",
    )
    parser.add_argument(
        "--client-file", type=Path, help='JSON {"client_id", "client_secret"} (the simulator keeps one)'
    )
    parser.add_argument(
        "--signing-key", type=Path, required=True, help="the registry's private signing JWK (EC P-256)"
    )
    parser.add_argument(
        "--jwks",
        type=Path,
        help="the registry's public JWKS (default: the signing key's public half and the record's keys)",
    )
    parser.add_argument("--driver-url", help="the registry's optional test driver (…/conformance/v1)")
    parser.add_argument("--ir-section", help="the IR test section's registry id (transfer cases), e.g. GHA01")
    parser.add_argument("--ir-account", help="a holding account of the IR test section (transfer cases)")
    parser.add_argument("--ca-id", help="a cooperative approach both Parties take part in (transfer cases)")
    parser.add_argument("--vintage", type=int, help="the vintage of the test units (transfer cases)")
    parser.add_argument("--ir-account-blocked", help="a blocked IR holding account (case 162, 5903)")
    parser.add_argument("--ir-account-closed", help="a closed IR account (case 162, 5906)")
    parser.add_argument(
        "--ir-account-manual",
        help="an IR account of a section with manual incoming acceptance, in the CA of --ca-id (case 165)",
    )
    parser.add_argument(
        "--ca-non-participant", help="a CA one of the Parties does not take part in (162, 5905)"
    )
    parser.add_argument(
        "--registry-account",
        action="append",
        default=[],
        metavar="ROLE=ID",
        help="the registry's fixture account for a role: valid, blocked, closed, policy, unknown "
        "(default: the simulator's XX-100-1, -90, -91, -92, -999999)",
    )
    parser.add_argument(
        "--rotation-jwks-file",
        type=Path,
        help="the file the registry's jwks_url serves (case 102 key rotation)",
    )
    parser.add_argument(
        "--rotation-wait",
        type=float,
        default=None,
        help="seconds between publishing the new key and using it (default: the IR's JWKS refetch interval,"
        " from its sandbox settings, plus 1 s; 61 if it does not say)",
    )
    parser.add_argument(
        "--restart-command",
        help="shell command that restarts the registry and returns once it serves again (case 171)",
    )
    parser.add_argument(
        "--interactive",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="without a driver, print each instruction or question for the operator and wait up to 10 min "
        "for the answer line (default: when stdin is a terminal)",
    )
    parser.add_argument(
        "--operator-timeout", type=float, default=600.0, help="seconds one operator question waits"
    )
    parser.add_argument(
        "--no-store", action="store_true", help="do not post the report to the IR (a dry run)"
    )
    parser.add_argument(
        "--webhook-listen",
        default="127.0.0.1:0",
        metavar="HOST:PORT",
        help="where case 400 listens for webhook deliveries (default: a free loopback port)",
    )
    parser.add_argument(
        "--webhook-url", help="the URL the IR is given for case 400's endpoint (default: the listener's own)"
    )
    parser.add_argument("--cases", help="comma-separated case numbers (default: all)")
    parser.add_argument("--page-size", type=int, default=2, help="inbox page size of case 116")
    parser.add_argument(
        "--report", type=Path, help="where to write the JSON report (default: conformance-<run id>.json)"
    )
    parser.add_argument(
        "--require-complete", action="store_true", help="exit 3 unless every mandatory case passed"
    )
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    return parser


def _credentials(args: argparse.Namespace) -> tuple[str, str]:
    if args.client_file is not None:
        return load_client_file(args.client_file)
    if not args.client_id:
        raise ConfigError(
            "give --client-id (with --client-secret-file or $CONFORMANCE_CLIENT_SECRET) or --client-file"
        )
    if args.client_secret_file is not None:
        try:
            secret = args.client_secret_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {args.client_secret_file}: {exc.strerror}") from None
    else:
        secret = secret_from_environment() or ""
    return args.client_id, secret


def _config(args: argparse.Namespace) -> KitConfig:
    client_id, secret = _credentials(args)
    return KitConfig(
        ir_url=args.ir_url.rstrip("/"),
        registry_id=args.registry_id,
        client_id=client_id,
        client_secret=secret,
        signing_key=load_private_jwk(args.signing_key),
        mode=args.mode,
        jwks=load_jwks(args.jwks) if args.jwks else {"keys": []},
        driver_url=args.driver_url,
        rotation_jwks_file=args.rotation_jwks_file,
        rotation_wait_seconds=args.rotation_wait,
        page_size=args.page_size,
        ir_section=args.ir_section,
        ir_account=args.ir_account,
        ca_id=args.ca_id,
        vintage=args.vintage,
        ir_accounts={
            role: account
            for role, account in (
                ("ir_blocked", args.ir_account_blocked),
                ("ir_closed", args.ir_account_closed),
                ("ir_manual", args.ir_account_manual),
            )
            if account
        },
        ca_non_participant=args.ca_non_participant,
        registry_accounts=_roles(args.registry_account),
        restart_command=args.restart_command,
        operator=terminal_operator() if _interactive(args) else None,
        operator_timeout=args.operator_timeout,
        store=not args.no_store,
        webhook_listen=_listen(args.webhook_listen),
        webhook_url=args.webhook_url,
    )


def _interactive(args: argparse.Namespace) -> bool:
    """§11: without a driver the kit asks the operator; on by default only when someone can answer."""
    if args.driver_url:
        return False
    if args.interactive is not None:
        return bool(args.interactive)
    try:
        return sys.stdin.isatty()
    except (AttributeError, OSError, ValueError):
        return False


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--webhook-listen {text!r}: expected HOST:PORT")
    return host, int(port)


def _roles(pairs: list[str]) -> dict[str, str]:
    roles: dict[str, str] = {}
    for pair in pairs:
        role, _, account = pair.partition("=")
        if not role or not account:
            raise ConfigError(f"--registry-account {pair!r}: expected ROLE=ID")
        roles[role.strip()] = account.strip()
    return roles


def _listing() -> str:
    from conformance.kit import run as _registrations  # noqa: F401  (fills CASES)

    return "\n".join(
        f"{made.number:>4} {'M' if made.mandatory else ' '} {'ready  ' if made.run else 'pending'} {made.title} — {made.pass_rule}"
        for made in sorted(CASES.values(), key=lambda made: made.number)
    )


async def run_cli(argv: Sequence[str] | None = None, *, http: httpx.AsyncClient | None = None) -> int:
    """The command line as a coroutine (tests pass an in-process `http` client bound to the gateway)."""
    parser = _parser()
    if "--list" in (sys.argv[1:] if argv is None else argv):
        print(_listing())
        return 0
    args = parser.parse_args(argv)
    try:
        config = _config(args)
        cases = [int(part) for part in args.cases.split(",") if part.strip()] if args.cases else None
        report = await run_kit(config, http=http, cases=cases)
    except (ConfigError, ValueError) as exc:
        print(f"conformance: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    path = args.report or Path(f"conformance-{report.conformance_run_id}.json")
    report.write(path)
    print(report.table())
    print(f"report: {path}")
    return report.exit_code(require_complete=args.require_complete)


def main() -> int:
    return asyncio.run(run_cli())


if __name__ == "__main__":
    sys.exit(main())
