"""The management port: WSGI helpers, the router, the server.

wsgi.py    answers, query strings, request paths (shared with probe.pprof)
router.py  paths and methods → the daemon's answers (ManagementApi)
server.py  the threaded, dual-stack HTTP server with read deadlines
"""

from probe.web.router import MAX_BODY, ManagementApi, Router
from probe.web.server import READ_TIMEOUT, ListenError, ManagementServer
from probe.web.wsgi import BadRequest, Environ, StartResponse, WSGIApp, query, respond

__all__ = [
    "MAX_BODY",
    "READ_TIMEOUT",
    "BadRequest",
    "Environ",
    "ListenError",
    "ManagementApi",
    "ManagementServer",
    "Router",
    "StartResponse",
    "WSGIApp",
    "query",
    "respond",
]
