"""``builtin_tools.lookup``: rows of a real CSV table; an unknown key or a file out of reach is an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentflow.plans import builtin_tools
from agentflow.plans.builtin_tools import lookup

TABLE = "planets.csv"


@pytest.fixture
def tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / TABLE).write_text("planet,moons\nMars,2\nEarth,1\nJupiter,95\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_lookup_returns_the_row_ignoring_case_and_spaces(tables: Path) -> None:
    assert lookup(TABLE, "  mars ") == {"planet": "Mars", "moons": "2"}
    assert lookup(str(tables / TABLE), "JUPITER")["moons"] == "95"


def test_lookup_of_an_unknown_key_is_an_error_naming_close_keys(tables: Path) -> None:
    with pytest.raises(ValueError) as info:
        lookup(TABLE, "Marz")
    message = str(info.value)
    assert "no row 'Marz' in table 'planets.csv' (column 'planet')" in message
    assert "did you mean 'Mars'" in message and "Earth" in message


def test_lookup_reads_the_repository_example_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(__file__).parents[3])
    row = lookup("examples/data/planets.csv", "Neptune")
    assert row["type"] == "ice giant" and row["moons"] == "16"


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda root: "../outside.csv", "outside the working directory"),
        (lambda root: "/etc/hosts", "outside the working directory"),
        (lambda root: ".secret/keys.csv", "hidden"),
        (lambda root: "notes.txt", "not a .csv file"),
        (lambda root: "missing.csv", "there is no table file"),
        (lambda root: "link.csv", "outside the working directory"),
    ],
)
def test_lookup_refuses_files_out_of_reach(tables: Path, make: object, needle: str) -> None:
    (tables.parent / "outside.csv").write_text("k,v\na,1\n", encoding="utf-8")
    (tables / ".secret").mkdir()
    (tables / ".secret" / "keys.csv").write_text("k,v\na,1\n", encoding="utf-8")
    (tables / "notes.txt").write_text("k,v\na,1\n", encoding="utf-8")
    (tables / "link.csv").symlink_to(tables.parent / "outside.csv")
    assert callable(make)
    with pytest.raises(ValueError, match=needle):
        lookup(make(tables), "a")


def test_lookup_refuses_a_table_over_the_size_limit(tables: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builtin_tools, "MAX_TABLE_BYTES", 10)
    with pytest.raises(ValueError, match="more than the 10 lookup reads"):
        lookup(TABLE, "Mars")


def test_lookup_of_a_header_only_table_is_an_error(tables: Path) -> None:
    (tables / "empty.csv").write_text("planet,moons\n", encoding="utf-8")
    with pytest.raises(ValueError, match="has no rows"):
        lookup("empty.csv", "Mars")
