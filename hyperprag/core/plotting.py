"""Matplotlib without a display, and PNG files written atomically (ablation plots, training curves)."""

from __future__ import annotations

import io
from pathlib import Path

from hyperprag.core.io import atomic_write_bytes


def pyplot():
    """matplotlib.pyplot on the Agg backend (works on headless machines and in CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | Path, dpi: int = 110) -> Path:
    """Render `fig` to memory, write it to `path` atomically and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
