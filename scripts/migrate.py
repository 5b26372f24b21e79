"""`python -m scripts.migrate [all|NAME ...]`: alembic upgrade head for each process's own database.

`python -m scripts.migrate --revision NAME -m "message"` autogenerates a new revision for one process
against a scratch SQLite database migrated to head (review it before committing).
"""

import argparse
import sys
import tempfile
from pathlib import Path

from alembic import command

from kit.migrations import alembic_config, upgrade
from scripts.processes import PROCESSES, by_name

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.migrate", description=__doc__)
    parser.add_argument("names", nargs="*", default=["all"], help="process names, or all")
    parser.add_argument("--revision", metavar="NAME", help="autogenerate a revision for this process")
    parser.add_argument("-m", "--message", default="change")
    args = parser.parse_args(argv)

    if args.revision:
        process = by_name(args.revision)
        with tempfile.TemporaryDirectory() as scratch:
            url = f"sqlite+aiosqlite:///{Path(scratch) / 'scratch.sqlite3'}"
            upgrade(process.package, url)
            command.revision(alembic_config(process.package, url), message=args.message, autogenerate=True)
        return 0

    targets = PROCESSES if args.names == ["all"] else tuple(by_name(name) for name in args.names)
    for process in targets:
        url = process.database_url()
        shown = url.split("@")[-1] if "@" in url else url
        print(f"migrating {process.name} ({shown})", file=sys.stderr)
        upgrade(process.package, url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
