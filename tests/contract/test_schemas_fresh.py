"""docs/schemas/ must match what `python -m scripts.schemas` generates from contracts today."""

import json
import shutil
from pathlib import Path

import pytest

from scripts import schemas


def test_committed_schemas_are_fresh(capsys: pytest.CaptureFixture[str]) -> None:
    code = schemas.main(["--check"])
    report = capsys.readouterr().err
    assert code == 0, f"docs/schemas is stale; run `python -m scripts.schemas`:\n{report}"


def test_every_public_type_has_a_schema() -> None:
    names = set(schemas.public_types())
    assert {
        "Account",
        "AccountType",
        "ActionType",
        "ClientCreate",
        "PartyCode",
        "UniqueIdStr",
        "Problem",
    } <= names
    assert "Page" not in names  # generic: no schema of its own
    for file_name, text in schemas.render().items():
        document = json.loads(text)
        assert document["title"] == file_name.removesuffix(".json")
        assert document["$schema"].startswith("https://json-schema.org/")
        assert text.endswith("}\n")


def test_render_is_deterministic() -> None:
    assert schemas.render() == schemas.render()


def test_check_reports_and_write_repairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "schemas"
    shutil.copytree(schemas.DEFAULT_DIR, target)
    (target / "Gone.json").write_text("{}\n", encoding="utf-8")
    (target / "Account.json").write_text("{}\n", encoding="utf-8")
    (target / "Party.json").unlink()
    (target / "README.md").write_text("kept\n", encoding="utf-8")

    assert schemas.main(["--check", "--dir", str(target)]) == 1
    report = capsys.readouterr().err
    assert "stale    Gone.json" in report
    assert "outdated Account.json" in report
    assert "missing  Party.json" in report
    assert (target / "Gone.json").exists(), "--check must not write"

    assert schemas.main(["--dir", str(target)]) == 0
    assert schemas.main(["--check", "--dir", str(target)]) == 0
    assert not (target / "Gone.json").exists()
    assert (target / "README.md").read_text(encoding="utf-8") == "kept\n"
    assert schemas.diff(target, schemas.render()) == []
