"""The one atomic-write helper: the target is the old version or the new one, never half of one."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.io.atomic import atomic_path, temporary_path, write_text_atomic


def test_a_file_is_replaced_whole_and_nothing_is_left_beside_it(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.json"
    write_text_atomic(target, "old")
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]


def test_a_failed_write_leaves_the_old_version(tmp_path: Path) -> None:
    target = tmp_path / "rows.jsonl.gz"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.name.endswith(".gz")  # the suffix is kept: gzip writers still see .gz
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert not temporary_path(target).exists()


def test_a_folder_appears_whole(tmp_path: Path) -> None:
    target = tmp_path / "chunk-000001"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("a")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "a"
