"""The HTTP API of the AI layer: a plain FastAPI app (``http.create_api``) over a backend.

``serve_deployments/app.py`` runs it as the Ray Serve ingress with Serve handles as the
backend; ``LocalBackend`` runs the same app on in-process models (tests, single machine).
"""
