"""Serve: an HTTP API and web pages for detection, explanation and the AnomAgent review queue.

Needs the ``[serve]`` extra (FastAPI, uvicorn, python-multipart). Start it with ``aigclab serve``.

Example:
    >>> from aigclab.serve import ServeConfig, Service, create_app  # doctest: +SKIP
    >>> app = create_app(Service.load(ServeConfig(detector="default")))  # doctest: +SKIP
"""

from aigclab._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    "aigclab.serve",
    {
        "ServeConfig": "aigclab.serve.service",
        "Service": "aigclab.serve.service",
        "Gate": "aigclab.serve.service",
        "create_app": "aigclab.serve.app",
        "Limits": "aigclab.serve.uploads",
        "ApiError": "aigclab.serve.uploads",
    },
)
