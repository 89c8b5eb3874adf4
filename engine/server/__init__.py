"""The engine over HTTP: every operation of the interface (engine/api.py) as a route, the seed client's calls
kept as they were, bearer-token auth, upload limits, jobs.

python -m engine serve [--host 127.0.0.1] [--port 8000] [--token T] [--ngrok] [--executor ray]
"""

from .app import create_app, is_loopback, open_tunnel, serve

__all__ = ["create_app", "is_loopback", "open_tunnel", "serve"]
