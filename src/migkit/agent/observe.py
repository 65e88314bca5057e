"""Logs (text or JSON lines), Prometheus metrics, and the /healthz, /readyz, /metrics server."""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from migkit.agent import labels as L

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(fmt: str, level: str, node: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("migkit")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    logging.getLogger("migkit.agent").info("migkit agent for node %s", node, extra={"node": node})


@attrs.define
class Metrics:
    registry: CollectorRegistry = attrs.Factory(CollectorRegistry)
    reconfigurations: Any = None
    duration: Any = None
    state_gauge: Any = None
    last_error: Any = None
    last_error_time: Any = None

    def __attrs_post_init__(self) -> None:
        r = self.registry
        self.reconfigurations = Counter(
            "migkit_agent_reconfigurations", "Reconfigurations by result", ["result"], registry=r)
        self.duration = Histogram(
            "migkit_agent_reconfiguration_duration_seconds", "Seconds from trigger to a terminal state",
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800), registry=r)
        self.state_gauge = Gauge("migkit_agent_state", "1 for the node's current mig.config.state", ["state"],
                                 registry=r)
        self.last_error = Gauge("migkit_agent_last_error", "1 for the step and config of the last failure",
                                ["step", "config"], registry=r)
        self.last_error_time = Gauge("migkit_agent_last_error_timestamp_seconds",
                                     "Unix time of the last failure (0: none)", registry=r)
        for result in L.TERMINAL_STATES:
            self.reconfigurations.labels(result)
        for state in L.STATES:
            self.state_gauge.labels(state).set(0)

    def state(self, value: str) -> None:
        for state in L.STATES:
            self.state_gauge.labels(state).set(1 if state == value else 0)

    def finished(self, result: str, seconds: float, step: str | None, config: str) -> None:
        self.reconfigurations.labels(result).inc()
        self.duration.observe(seconds)
        if result == L.STATE_FAILED:
            self.last_error.clear()
            self.last_error.labels(step or "unknown", config).set(1)
            self.last_error_time.set(time.time())


@attrs.define
class Health:
    """Liveness: the worker and the watch loop have reported recently. Readiness: the node was read."""

    ready: threading.Event = attrs.Factory(threading.Event)
    beats: dict[str, float] = attrs.Factory(dict)
    stale_after: float = 120.0
    # A reconfiguration may wait minutes (operand timeouts, a drain): the worker is not stale then.
    busy: set[str] = attrs.Factory(set)

    def beat(self, who: str) -> None:
        self.beats[who] = time.monotonic()

    def healthy(self) -> tuple[bool, str]:
        now = time.monotonic()
        stale = [w for w, t in self.beats.items() if now - t > self.stale_after and w not in self.busy]
        return (not stale, "stale: " + ", ".join(stale) if stale else "ok")


def serve(address: str, port: int, metrics: Metrics, health: Health) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok, why = health.healthy()
                self._send(200 if ok else 500, why.encode())
            elif path == "/readyz":
                ready = health.ready.is_set()
                self._send(200 if ready else 503, b"ok" if ready else b"node not read yet")
            else:
                self._send(404, b"not found")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
