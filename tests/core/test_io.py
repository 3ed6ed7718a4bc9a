"""Atomic folder writes: a finished folder replaces only an empty one or an earlier output of its kind."""

from __future__ import annotations

import pytest

from hyperprag.core.errors import InputError
from hyperprag.core.io import write_dir


def _fill(text: str):
    def fill(tmp):
        (tmp / "out.json").write_text(text)
        (tmp / "weights.bin").write_bytes(b"\0")

    return fill


def test_write_dir_replaces_its_own_output_whole(tmp_path):
    out = tmp_path / "run" / "hypernet"
    write_dir(out, _fill("one"), marker="out.json")
    (out / "stale.txt").write_text("left from the first write")
    write_dir(out, _fill("two"), marker="out.json")
    assert (out / "out.json").read_text() == "two" and sorted(p.name for p in out.iterdir()) == ["out.json", "weights.bin"]
    assert [p.name for p in out.parent.iterdir()] == ["hypernet"]  # no temporary or old folder left
    empty = tmp_path / "empty"
    empty.mkdir()
    write_dir(empty, _fill("three"), marker="out.json")
    assert (empty / "out.json").read_text() == "three"


def test_write_dir_refuses_a_folder_of_other_files_and_keeps_them(tmp_path):
    package = tmp_path / "hypernet"  # e.g. the source package, as <root>/hypernet from the repository root
    package.mkdir()
    (package / "__init__.py").write_text("x = 1\n")
    with pytest.raises(InputError, match=r"hypernet: exists and is not an earlier output.*no out\.json"):
        write_dir(package, _fill("one"), marker="out.json")
    assert [p.name for p in package.iterdir()] == ["__init__.py"] and [p.name for p in tmp_path.iterdir()] == ["hypernet"]
    (tmp_path / "file").write_text("a file, not a folder")
    with pytest.raises(InputError, match="file: exists"):
        write_dir(tmp_path / "file", _fill("one"), marker="out.json")


def test_a_failed_fill_leaves_the_old_output(tmp_path):
    out = tmp_path / "x"
    write_dir(out, _fill("one"), marker="out.json")

    def broken(tmp):
        (tmp / "out.json").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_dir(out, broken, marker="out.json")
    assert (out / "out.json").read_text() == "one" and [p.name for p in tmp_path.iterdir()] == ["x"]
