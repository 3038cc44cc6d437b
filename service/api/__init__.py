"""The REST API (FastAPI), versioned under ``/api/v1``; build it with :func:`create_app`."""

from service.api.app import API_PREFIX, create_app

__all__ = ["create_app", "API_PREFIX"]
