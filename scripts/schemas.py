"""`python -m scripts.schemas [--check] [--dir DIR]`: JSON Schemas of the public wire formats in docs/schemas/.

One file per public model, enum and identifier type of `contracts` (`<Name>.json`): every name in the
`__all__` of `contracts` and of each of its modules, so a module added later is covered without a list to
keep up to date. Generic models (`Page[T]`) have no schema of their own and are skipped. Output is
deterministic (sorted keys, indent 2, trailing newline); `.json` files that no longer match a public name
are removed. `--check` writes nothing, lists the differences and exits 1 when the directory is stale.
"""

import argparse
import enum
import importlib
import json
import pkgutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, get_origin

from pydantic import BaseModel, TypeAdapter

import contracts

__all__ = ["DEFAULT_DIR", "diff", "main", "public_types", "render", "write"]

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _is_schema_type(obj: object) -> bool:
    if get_origin(obj) is Annotated:
        return True
    if isinstance(obj, type) and issubclass(obj, enum.Enum):
        return True
    if isinstance(obj, type) and issubclass(obj, BaseModel):
        # An unparametrised generic has no fixed item schema; its parametrisations appear where used.
        return not obj.__pydantic_generic_metadata__["parameters"]
    return False


def public_types() -> dict[str, Any]:
    """Name → public model, enum or Annotated type across `contracts` and its modules, sorted by name."""
    modules = [contracts] + [
        importlib.import_module(f"{contracts.__name__}.{info.name}")
        for info in pkgutil.iter_modules(contracts.__path__)
        if not info.name.startswith("_")
    ]
    found: dict[str, Any] = {}
    for module in modules:
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if not _is_schema_type(obj):
                continue
            if name in found and found[name] is not obj:
                raise RuntimeError(f"two different public contracts types are named {name!r}")
            found[name] = obj
    return dict(sorted(found.items()))


def _schema(name: str, obj: Any) -> dict[str, Any]:
    if isinstance(obj, type) and issubclass(obj, BaseModel):
        schema = obj.model_json_schema()
    else:
        schema = TypeAdapter(obj).json_schema()
    schema.setdefault("title", name)
    schema["$schema"] = JSON_SCHEMA_DIALECT
    return schema


def render() -> dict[str, str]:
    """File name → file text for every public type."""
    return {
        f"{name}.json": json.dumps(_schema(name, obj), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        for name, obj in public_types().items()
    }


def diff(directory: Path, rendered: dict[str, str]) -> list[str]:
    """What differs between `directory` and `rendered`, one line per file (empty when up to date)."""
    existing = {path.name for path in directory.glob("*.json")} if directory.is_dir() else set()
    lines: list[str] = []
    for file_name in sorted(existing | rendered.keys()):
        if file_name not in existing:
            lines.append(f"missing  {file_name}")
        elif file_name not in rendered:
            lines.append(f"stale    {file_name}")
        elif (directory / file_name).read_text(encoding="utf-8") != rendered[file_name]:
            lines.append(f"outdated {file_name}")
    return lines


def write(directory: Path, rendered: dict[str, str]) -> list[str]:
    """Bring `directory` up to date; returns the changes made, as `diff` words them."""
    changes = diff(directory, rendered)
    directory.mkdir(parents=True, exist_ok=True)
    for line in changes:
        status, file_name = line.split()
        path = directory / file_name
        if status == "stale":
            path.unlink()
        else:
            # Pin newline so the committed files are byte-identical on every platform.
            path.write_text(rendered[file_name], encoding="utf-8", newline="\n")
    return changes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.schemas", description=__doc__)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the files are stale")
    parser.add_argument(
        "--dir", type=Path, default=DEFAULT_DIR, help="output directory (default docs/schemas)"
    )
    args = parser.parse_args(argv)

    rendered = render()
    if args.check:
        differences = diff(args.dir, rendered)
        if differences:
            print(f"{args.dir} is not up to date with contracts:", file=sys.stderr)
            for line in differences:
                print(f"  {line}", file=sys.stderr)
            print("run: python -m scripts.schemas", file=sys.stderr)
            return 1
        print(f"{args.dir}: {len(rendered)} schemas up to date")
        return 0

    changes = write(args.dir, rendered)
    for line in changes:
        print(line)
    print(f"{args.dir}: {len(rendered)} schemas, {len(changes)} changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
