"""`python -m conformance.simulator`: run the reference national registry beside an IR.

Either give the registry client (`--client-id`/`--client-secret`, e.g. for a record the Secretariat made),
or `--onboard` with the Secretariat's bootstrap client (default: `secretariat-bootstrap` and the secret
`make run` keeps in `var/bootstrap-client-secret`), which creates the record and the client first. The
public JWKS is printed at start, so a sandbox record can take it inline.
"""

import argparse
import asyncio
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

import uvicorn

from conformance.simulator.app import create_app
from conformance.simulator.config import BUG_MODES, CRASH_POINTS, Policy, SimulatorConfig
from conformance.simulator.engine import Simulator, load_key
from conformance.simulator.onboard import load_or_onboard
from kit.logging import configure_logging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m conformance.simulator", description=__doc__)
    parser.add_argument("--registry-id", default="CHE01")
    parser.add_argument("--ir-url", default=os.environ.get("REGISTRY_GATEWAY_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--client-id")
    parser.add_argument("--client-secret", default=os.environ.get("SIMULATOR_CLIENT_SECRET"))
    parser.add_argument(
        "--onboard", action="store_true", help="create the record and client with the bootstrap client"
    )
    parser.add_argument(
        "--bootstrap-client-id",
        default=os.environ.get("REGISTRY_BOOTSTRAP_CLIENT_ID", "secretariat-bootstrap"),
    )
    parser.add_argument(
        "--bootstrap-secret-file",
        type=Path,
        default=Path(os.environ.get("REGISTRY_DATA_DIR", "var")) / "bootstrap-client-secret",
    )
    parser.add_argument(
        "--publish-jwks-url",
        action="store_true",
        help="onboarding names this simulator's http://HOST:PORT/.well-known/jwks.json as the record's jwks_url"
        " instead of the key inline (conformance 102 rotates the key through the driver; sandbox only)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8210)
    parser.add_argument("--db", type=Path, help="SQLite file (default var/simulator/<registry>.sqlite)")
    parser.add_argument("--env", default="sandbox", choices=["sandbox", "production"])
    parser.add_argument("--policy", default="accept", help="accept | silent | reject:<code>")
    parser.add_argument("--bug", action="append", default=[], choices=sorted(BUG_MODES))
    parser.add_argument(
        "--crash-at",
        "--fault",
        dest="crash_at",
        choices=sorted(CRASH_POINTS),
        default=SimulatorConfig.crash_from_env(),
        help="exit 137 the first time this point is reached (also SIMULATOR_CRASH_AT)",
    )
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--http-timeout", type=float, default=10.0, help="seconds per request to the IR")
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        policy = Policy.parse(args.policy)
    except ValueError as exc:
        parser.error(str(exc))
    configure_logging(args.log_level, json=True, service=f"simulator-{args.registry_id.lower()}")
    # One line per poll is noise; the simulator logs what it does itself.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    db = args.db or Path("var/simulator") / f"{args.registry_id.lower()}.sqlite"
    config = SimulatorConfig(
        registry_id=args.registry_id,
        ir_url=args.ir_url,
        client_id=args.client_id or "",
        client_secret=args.client_secret or "",
        db_path=db.resolve(),
        port=args.port,
        host=args.host,
        env=args.env,
        policy=policy,
        bugs=frozenset(args.bug),
        crash_at=args.crash_at,
        poll_interval=args.poll_interval,
        http_timeout=args.http_timeout,
    )
    # The key exists before the record: onboarding puts its public half inline on the record.
    jwks = {"keys": [load_key(config).public_jwk]}
    if args.onboard or not args.client_id:
        if not args.bootstrap_secret_file.exists():
            print(
                f"no --client-id and no {args.bootstrap_secret_file}: start `make run` first, or give the"
                " registry client",
                file=sys.stderr,
            )
            return 2
        credentials_file = config.data_dir / f"{args.registry_id.lower()}-client.json"
        stored = json.loads(credentials_file.read_text()) if credentials_file.exists() else None
        credentials = asyncio.run(
            load_or_onboard(
                args.ir_url,
                admin_id=args.bootstrap_client_id,
                admin_secret=args.bootstrap_secret_file.read_text().strip(),
                registry_id=args.registry_id,
                jwks=jwks,
                stored=stored,
                jwks_url=f"http://{args.host}:{args.port}/.well-known/jwks.json"
                if args.publish_jwks_url
                else None,
            )
        )
        if credentials != stored:
            credentials_file.write_text(json.dumps(credentials))
            credentials_file.chmod(0o600)
        config = replace(
            config, client_id=credentials["client_id"], client_secret=credentials["client_secret"]
        )
    simulator = Simulator(config)
    print(json.dumps({"registry_id": args.registry_id, "jwks": jwks}), flush=True)
    print(
        f"\nReference national registry {args.registry_id} (simulator)\n"
        f"  IR:        {args.ir_url}\n"
        f"  driver:    http://{args.host}:{args.port}/conformance/v1/state\n"
        f"  JWKS:      http://{args.host}:{args.port}/.well-known/jwks.json\n"
        f"  database:  {config.db_path}\n"
        f"  policy:    {config.policy}  bugs: {sorted(config.bugs) or 'none'}  crash at: {config.crash_at or 'never'}\n",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        create_app(simulator),
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
