"""The unit tier runs without Ray and without models: starting Ray, loading the embedding model,
starting the embedded LLM or training the schema-mapping scorer fails the test that tries it (as Ray
Serve's own unit tests forbid ``ray.init``). A test that needs one of them belongs in
tests/integration/; a unit test passes a fake instead (an ``encode=`` function, an ``llm=`` object, a
``scorer=``)."""
import pytest


class NotInUnitTests(RuntimeError):
    pass


def _forbid(what: str):
    def refuse(*args, **kwargs):
        raise NotInUnitTests(f"unit tests do not {what}: pass a fake, or move the test to tests/integration/")
    return refuse


@pytest.fixture(scope="session", autouse=True)
def no_ray_and_no_models():
    import ray

    from eai_ray.processing.mapping.scorer import Scorer
    from eai_ray.processing.models.embedder import Embedder
    from eai_ray.processing.models.llm import LocalGGUF

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ray, "init", _forbid("start Ray (ray.init)"))
        mp.setattr(Embedder, "load", classmethod(_forbid("load the embedding model (Embedder.load)")))
        mp.setattr(LocalGGUF, "_ensure", _forbid("start the embedded LLM (LocalGGUF)"))
        mp.setattr(Scorer, "train", classmethod(_forbid("train the schema-mapping scorer (Scorer.train)")))
        yield
