"""The project's models: a sentence embedder and language models behind one interface.

Both run in-process (CPU, offline) by default; ``serve_deployments/`` puts the same
classes behind Ray Serve. Heavy dependencies are imported lazily.
"""
from eai_ray.processing.models.embedder import Embedder
from eai_ray.processing.models.llm import LLM, Completion, llm_from_config

__all__ = ["Embedder", "LLM", "Completion", "llm_from_config"]
