"""Where the code finds the YAML configs it reads, in a checkout and in an installed wheel alike.

`configs/` at the top of the repository is the one copy (the design keeps it there, for users to read and
edit). `hyperprag/configs` is a symbolic link to it, declared as package data, so a wheel installs real
copies of the same files inside the package: the code always reads `CONFIGS`, wherever it runs from.
"""

from __future__ import annotations

from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
"""configs/ of the checkout (through the link), or the copy inside an installed package."""


def config_path(relative: str) -> Path:
    """A shipped config by its path under configs/, e.g. "teacher/cpu.yaml"; a clear error if it is absent."""
    path = CONFIGS / relative
    if not path.is_file():
        raise FileNotFoundError(f"config {relative!r} is not in {CONFIGS} (the installation is incomplete)")
    return path


def resolve_path(path: str | Path) -> Path:
    """An absolute path: as given if absolute or present from here, else relative to the folder that holds
    configs/ (the checkout's root, or the installed package), so that `configs/teacher/cpu.yaml` and, in a
    checkout, `../shared/data/...` mean the same from any working directory."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p.resolve()
    beside = CONFIGS.resolve().parent / p
    return beside.resolve() if beside.exists() else p.resolve()
