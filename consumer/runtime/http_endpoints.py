"""One HTTP port for operators: ``/metrics`` (Prometheus), ``/healthz`` (liveness) and
``/readyz`` (readiness), served from daemon threads.

The probes read ``HealthState`` only: what the loop last saw, never a call to Redis or the
store, so a probe answers at once even while both are away.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from consumer.errors import MetricsPortUnavailable
from consumer.runtime.health import HealthState

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

PROBES = {"/healthz": "live", "/readyz": "ready"}


class _Quiet(WSGIRequestHandler):
    """No line per request on stderr: probes come every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def endpoints_app(registry: CollectorRegistry, health: HealthState | None) -> WsgiApp:
    """Route the probes to ``health`` and everything else to the Prometheus app."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        check = PROBES.get(environ.get("PATH_INFO", ""))
        if check is None or health is None:
            return list(metrics(environ, start_response))
        passes, body = health.report(check=check)
        payload = json.dumps(body).encode()
        status = "200 OK" if passes else "503 Service Unavailable"
        start_response(
            status,
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
        )
        return [payload]

    return app


def serve(registry: CollectorRegistry, health: HealthState | None, port: int, host: str) -> int:
    """Serve the endpoints on ``host:port`` from a daemon thread; return the bound port."""

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    try:
        httpd: WSGIServer = make_server(
            host, port, endpoints_app(registry, health), Server, handler_class=_Quiet
        )
    except OSError as error:
        raise MetricsPortUnavailable(
            f"cannot serve metrics on {host}:{port} (--metrics-port): {error.strerror or error}"
        ) from error
    threading.Thread(target=httpd.serve_forever, name="healthfsm-http", daemon=True).start()
    bound = int(httpd.server_port)
    log.info("metrics on http://%s:%d/metrics (probes: /healthz, /readyz)", host, bound)
    return bound
