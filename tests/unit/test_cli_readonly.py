"""Read-only commands never create a lake: looking at a mistyped path leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from marketlake.cli.app import main


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_info_on_missing_lake_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MARKETLAKE_LAKE_ROOT", raising=False)
    for args in (["info"], ["info", "--json"]):
        assert main([*args, "--lake", "typo"]) == 0
        assert "no series stored yet" in capsys.readouterr().out or args[-1] == "--json"
    assert _tree(tmp_path) == []


def test_listing_a_missing_lake_through_the_library_creates_nothing(tmp_path: Path) -> None:
    from marketlake.settings import Settings
    from marketlake.store import Lake

    root = tmp_path / "typo"
    assert Lake(root, settings=Settings.load(overrides={"lake_root": str(root)})).series().is_empty()
    assert not root.exists()
