"""The learned pair scorer: gradient boosting over `features.FEATURES`, calibrated (isotonic).

Trained on pairs fabricated from the TPC-DS training tables shipped in `data/` (deterministic
seed), plus approved mappings from the review queue; cached as a small joblib artifact keyed by
the feature version, corpus and learned pairs, so it is built once at first use (about a minute
on 2 cores) and loaded in milliseconds after.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eai_ray.processing.mapping.fabricate import CORPUS_PATH, Task, fabricate, load_corpus
from eai_ray.processing.mapping.features import FEATURE_VERSION, FEATURES, pair_features, prepare
from eai_ray.settings import settings

SEED = 20261125
_lock = threading.Lock()
_loaded: dict[str, Scorer] = {}


def cache_dir() -> Path:
    d = Path(settings().cache_dir).expanduser()
    d.mkdir(parents=True, exist_ok=True)
    return d


class CachedEncoder:
    """Memoises sentence embeddings: names and sample texts repeat across pairs and requests.

    At most ``max_entries`` embeddings are kept (least recently used go first): a long-lived server
    sees texts from every client, and an unbounded memo would grow with all of them.
    """

    def __init__(self, embedder=None, *, max_entries: int = 50_000) -> None:
        self._embedder = embedder
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    @property
    def embedder(self):
        if self._embedder is None:
            from eai_ray.processing.models.embedder import Embedder
            self._embedder = Embedder.load(device=settings().embed_device)
        return self._embedder

    def __call__(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), np.float32)
        with self._lock:
            found = {t: self._memo[t] for t in dict.fromkeys(texts) if t in self._memo}
            for t in found:
                self._memo.move_to_end(t)
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            vecs = self.embedder.encode(missing)
            found.update(zip(missing, vecs))
            with self._lock:
                self._memo.update(zip(missing, vecs))
                while len(self._memo) > self._max:
                    self._memo.popitem(last=False)
        return np.stack([found[t] for t in texts]).astype(np.float32)


_default_encoder: CachedEncoder | None = None


def default_encoder() -> CachedEncoder:
    global _default_encoder
    if _default_encoder is None:
        _default_encoder = CachedEncoder()
    return _default_encoder


def task_matrix(task: Task, encode: Callable[[list[str]], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) for every source x target pair of a task."""
    src, tgt = prepare(task.source, encode), prepare(task.target, encode)
    F = pair_features(src, tgt)
    y = np.zeros(F.shape[:2], dtype=np.int8)
    tindex = {c["name"]: j for j, c in enumerate(task.target)}
    for i, c in enumerate(task.source):
        for t in task.gold.get(c["name"], ()):
            if t in tindex:
                y[i, tindex[t]] = 1
    return F.reshape(-1, F.shape[-1]), y.reshape(-1)


def learned_tasks(pairs: Iterable[dict[str, Any]]) -> list[Task]:
    """Approved mappings as extra training tasks: each approved (source, target) is a positive
    against the other target columns of the same target table."""
    by_table: dict[str, list[dict[str, Any]]] = {}
    for p in pairs:
        by_table.setdefault(p.get("target_table") or "", []).append(p)
    tasks = []
    for table, ps in by_table.items():
        targets: dict[str, dict[str, Any]] = {}
        sources, gold = [], {}
        for p in ps:
            targets.setdefault(p["target"], {"name": p["target"], "type": p.get("target_type"),
                                             "samples": p.get("target_samples") or []})
            sources.append({"name": p["source"], "type": p.get("source_type"), "samples": p.get("source_samples") or []})
            gold[p["source"]] = {p["target"]}
        if len(targets) >= 2:
            tasks.append(Task(source=sources, target=list(targets.values()), gold=gold, table=table, kind="learned"))
    return tasks


class Scorer:
    """Calibrated probability that a (source, target) column pair corresponds."""

    def __init__(self, model, *, key: str, trained_on: int) -> None:
        self.model = model
        self.key = key
        self.trained_on = trained_on

    def predict(self, X: np.ndarray) -> np.ndarray:
        if len(X) == 0:
            return np.zeros(0)
        return self.model.predict_proba(X)[:, 1]

    @classmethod
    def train(cls, tasks: Sequence[Task], *, encode=None, key: str = "") -> Scorer:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.ensemble import HistGradientBoostingClassifier

        encode = encode or default_encoder()
        Xs, ys = [], []
        for t in tasks:
            X, y = task_matrix(t, encode)
            Xs.append(X)
            ys.append(y)
        X, y = np.concatenate(Xs), np.concatenate(ys)
        base = HistGradientBoostingClassifier(max_iter=250, learning_rate=0.06, max_leaf_nodes=31,
                                              l2_regularization=1.0, random_state=SEED)
        model = CalibratedClassifierCV(base, method="isotonic", cv=3)
        model.fit(X, y)
        return cls(model, key=key, trained_on=int(len(y)))

    @classmethod
    def default(cls, *, learned: Sequence[dict[str, Any]] = (), encode=None) -> Scorer:
        """The scorer for the shipped corpus (+ learned pairs): loaded from cache or trained once."""
        import joblib
        import sklearn

        learned = list(learned)
        h = hashlib.sha256()
        h.update(f"v{FEATURE_VERSION}:{','.join(FEATURES)}:{sklearn.__version__}:{SEED}".encode())
        h.update(CORPUS_PATH.read_bytes())
        h.update(json.dumps([[p["source"], p["target"], p.get("target_table")] for p in learned],
                            sort_keys=True).encode())
        key = h.hexdigest()[:16]
        with _lock:
            if key in _loaded:
                return _loaded[key]
            path = cache_dir() / f"schema_scorer-{key}.joblib"
            scorer = None
            if path.exists():
                try:
                    scorer = joblib.load(path)
                except Exception:  # a stale or partial artifact: rebuild it
                    scorer = None
            if scorer is None:
                tasks = training_tasks() + learned_tasks(learned)
                scorer = cls.train(tasks, encode=encode, key=key)
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                joblib.dump(scorer, tmp)
                os.replace(tmp, path)
            _loaded[key] = scorer
            return scorer


def training_tasks() -> list[Task]:
    """Fabricated tasks over the shipped TPC-DS training tables (deterministic)."""
    return fabricate(load_corpus(), variants=8, seed=SEED)
