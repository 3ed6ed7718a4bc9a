"""Crash-safe file writes: a finished file is either the old one or the complete new one, never half."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from hyperprag.core.errors import InputError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_jsonl_records(path: str | Path) -> list[dict]:
    """Read a results JSONL written by `append_jsonl`, ignoring a torn last line from a killed run."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    lines = path.read_text(encoding="utf-8").split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # a partial final line is what a kill mid-write leaves
                break
            raise
    return records


def append_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    """Append complete lines and fsync, so finished records survive a kill."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Drop a torn last line left by a killed writer before appending.
    if path.exists() and path.stat().st_size > 0:
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                data = path.read_bytes()
                f.seek(0)
                f.truncate(data.rfind(b"\n") + 1)
    with open(path, "a", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def replace_dir(tmp: str | Path, out_dir: str | Path) -> None:
    """Move a finished `tmp` folder to `out_dir`; an existing `out_dir` is swapped out, then removed."""
    tmp, out_dir = Path(tmp), Path(out_dir)
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
        os.replace(out_dir, old / "x")
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_replaceable(out_dir: str | Path, marker: str) -> None:
    """Refuse an output folder that exists and is neither empty nor an earlier output of the same kind (one
    holding `marker`), so that a mistyped or defaulted path never deletes someone's other files."""
    out_dir = Path(out_dir)
    if not out_dir.exists() or (out_dir.is_dir() and (out_dir / marker).is_file()):
        return
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        return
    raise InputError(f"{out_dir}: exists and is not an earlier output of this kind (it has no {marker}); "
                     "refusing to replace it: choose another folder or remove it")


def write_dir(out_dir: str | Path, fill: Callable[[Path], None], marker: str) -> Path:
    """Write a folder atomically: `fill` writes into a temporary sibling, its files are synced, and the
    finished folder replaces `out_dir` whole (only an empty one or an earlier output: `check_replaceable`)."""
    out_dir = Path(out_dir)
    check_replaceable(out_dir, marker)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        fill(tmp)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
