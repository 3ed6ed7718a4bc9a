"""Splitting a corpus across processes or machines: stable, so N workers cover it exactly once."""

from __future__ import annotations

import hashlib


def shard_of(doc_id: str, num_shards: int) -> int:
    """Stable shard of a document id (same on every machine and Python run)."""
    return int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "big") % num_shards


def parse_shard(shard: str) -> tuple[int, int]:
    """'i/N' -> (i, N), with a clear error."""
    try:
        i, n = (int(x) for x in shard.split("/"))
    except ValueError:
        raise ValueError(f"shard {shard!r} must look like 'i/N', e.g. '0/4'") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"shard {shard!r}: need 0 <= i < N")
    return i, n
