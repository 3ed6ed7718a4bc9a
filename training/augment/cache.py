"""Per-document augmentation cache: one JSON file per (content, method, augment model, settings, version)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from hyperprag.core.io import atomic_write_json
from training.augment.records import Augmentation

logger = logging.getLogger(__name__)
AUGMENT_VERSION = 1  # bump when rules, prompts or parsing change what augmentation produces


def cache_key(content_hash: str, method: str, augment_model: str | None, settings: dict) -> str:
    """Key of one document's augmentation: its content plus everything that changes the result."""
    blob = json.dumps({"content": content_hash, "method": method, "model": augment_model or "",
                       "settings": settings, "version": AUGMENT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cache_path(cache_dir: str | Path, content_hash: str, key: str) -> Path:
    return Path(cache_dir) / f"{content_hash}-{key}.json"


def load_cached(path: Path, doc_id: str) -> Augmentation | None:
    """The cached augmentation (with this document's id), or None if absent or unreadable."""
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        aug = Augmentation.from_dict(record["augmentation"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        logger.warning("ignoring unreadable augmentation cache %s: %s", path, err)
        return None
    aug.doc_id = doc_id  # the same content may appear under another id
    return aug


def save_cached(path: Path, aug: Augmentation, meta: dict) -> None:
    """Write atomically, so a killed run leaves either no file or a complete one."""
    atomic_write_json(path, {"meta": {**meta, "version": AUGMENT_VERSION}, "augmentation": aug.to_dict()})
