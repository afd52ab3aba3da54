"""What a person sees before any work: --version, --help, completion, and how fast it appears."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import typer.main

from marketlake.cli.app import app, main
from marketlake.core.symbols import CATEGORIES
from marketlake.errors import InvalidSymbolError

HEAVY = ("numba", "pyarrow", "polars", "duckdb", "aiohttp", "numpy")


def _commands() -> dict[str, object]:
    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_version(capsys) -> None:
    from marketlake import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"marketlake {__version__}"


def test_help_lists_every_command_sorted_with_its_whole_summary(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--install-completion" in out and "--show-completion" in out and "--version" in out
    listed = re.findall(r"^  ([a-z][a-z-]+)  +(\S.*)$", out.split("Commands:", 1)[1], re.M)
    names = [name for name, _ in listed]
    assert names == sorted(_commands()) and len(names) >= 12
    for name, summary in listed:
        assert not summary.endswith("..."), f"{name}: summary cut: {summary}"


def test_no_rest_markup_in_any_help_text() -> None:
    for name, cmd in _commands().items():
        texts = [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]  # type: ignore[attr-defined]
        for text in texts:
            assert "``" not in text and ":class:" not in text and ":meth:" not in text, f"{name}: {text!r}"


def test_category_help_lists_exactly_what_the_error_accepts(capsys) -> None:
    from marketlake.core.symbols import validate_category

    with pytest.raises(InvalidSymbolError) as err:
        validate_category("futures")
    assert main(["check", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    listed = ", ".join(CATEGORIES)
    assert listed in help_text and listed in str(err.value)


def test_ingest_help_says_symbols_are_needed_not_that_they_default_to_all(capsys) -> None:
    assert main(["ingest", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    symbols_help = text.split("--symbols", 1)[1].split("--all-symbols", 1)[0]
    assert "default: all" not in symbols_help and "or" in symbols_help
    assert main(["ingest", "--lake", "x"]) == 2  # and leaving both out is an error
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize(
    "code", ["import marketlake", "import marketlake.cli.app", "from marketlake.cli.app import main; main(['--help'])"]
)
def test_start_up_imports_no_heavy_library(code: str) -> None:
    probe = f"{code}\nimport sys\nprint('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.rstrip().splitlines()[-1] == "HEAVY=", f"{code!r} imported {out.rstrip().splitlines()[-1]}"


def test_the_lazy_package_still_offers_every_public_name() -> None:
    import marketlake

    for name in marketlake.__all__:
        assert getattr(marketlake, name) is not None
    assert set(marketlake.__all__) <= set(dir(marketlake))
    with pytest.raises(AttributeError):
        marketlake.NoSuchThing  # noqa: B018
