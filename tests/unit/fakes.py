"""Stand-ins for the models in unit tests (tests/unit/conftest.py forbids the real ones)."""
import numpy as np

from eai_ray.processing.mapping.features import FEATURES


def fake_encode(texts):
    """Deterministic unit vectors per text: the pair stage needs embeddings, not good ones."""
    out = np.zeros((len(texts), 384), dtype=np.float32)
    for i, t in enumerate(texts):
        v = np.random.default_rng(abs(hash(t)) % (1 << 32)).standard_normal(384)
        out[i] = v / np.linalg.norm(v)
    return out


class FakeScorer:
    """The schema-mapping scorer's interface without its training: the probability that a pair
    corresponds is the names' edit-distance similarity (one of the pair features)."""

    key, trained_on = "fake", 0
    _LEV = FEATURES.index("lev_raw")

    def predict(self, X):
        X = np.asarray(X, dtype=np.float64)
        return np.clip(X[:, self._LEV], 0.0, 1.0) if len(X) else np.zeros(0)
