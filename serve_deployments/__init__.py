"""Ray Serve deployments of the AI layer: thin shells around ``eai_ray.processing.models`` and ``eai_ray.api``.

``app.py`` builds the application (Embedder, LLM, FastAPI ingress) used by ``eai serve``,
``serve run configs/serve.yaml`` and ``serve deploy configs/serve.yaml``.
"""
