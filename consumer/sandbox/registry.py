"""Stand-in for a Confluent Schema Registry: the REST subset confluent-kafka's serdes use, over HTTP.

No registry server installs here (it is a JVM service), so tests, the demo and the benchmark run
this one on a loopback port, in its own thread (the serializers call it synchronously):

- ``POST /subjects/{subject}/versions`` register (the same schema text gets the same id),
- ``POST /subjects/{subject}`` look a schema up under a subject,
- ``GET /schemas/ids/{id}`` a schema by id (``?subject=``/``?format=`` accepted and ignored),
- ``GET /subjects/{subject}/versions/{version|latest}``, ``GET /subjects``.

Errors answer like the real registry: ``{"error_code": 40403, "message": ...}`` with 404.
``available = False`` makes every request answer 503 (a registry outage as clients see it behind a
load balancer); ``user_info`` ("user:password") requires that HTTP basic auth, else 401.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

FIRST_ID = 1


class SandboxRegistry:
    """An in-memory schema registry on 127.0.0.1; start(), use .url, stop() (or use as a context manager)."""

    def __init__(self, user_info: str | None = None) -> None:
        self.user_info = user_info
        self.available = True
        self.requests: Counter[str] = Counter()  # "GET /schemas/ids" etc.; "any": every request
        self._lock = threading.Lock()
        self._schemas: list[
            dict[str, Any]
        ] = []  # index = id - FIRST_ID: {"schema", "schemaType", "references"}
        self._subjects: dict[str, list[int]] = {}  # subject -> ids by version
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL clients use (SCHEMA_REGISTRY_URL)."""
        assert self._server is not None, "start() first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self, port: int = 0) -> SandboxRegistry:
        """Listen on 127.0.0.1 (port 0: any free port) in a daemon thread."""
        registry = self

        class Handler(_Handler):
            owner = registry

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sandbox-registry", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> SandboxRegistry:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def schema_count(self) -> int:
        """How many distinct schemas are registered (ids 1..n)."""
        return len(self._schemas)

    def register(self, subject: str, schema: str, schema_type: str = "AVRO") -> int:
        """Register a schema directly (as a producer's serializer would); return its id."""
        status, body = self.answer(
            "POST", f"/subjects/{subject}/versions", {"schema": schema, "schemaType": schema_type}
        )
        assert status == 200, body
        return int(body["id"])

    # ---- the REST subset -----------------------------------------------------------------------
    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        """The status and JSON answer to one request (thread-safe)."""
        parts = [unquote(p) for p in path.strip("/").split("/")]
        with self._lock:
            if method == "GET" and parts[:2] == ["schemas", "ids"] and len(parts) == 3 and parts[2].isdigit():
                self.requests["GET /schemas/ids"] += 1
                schema = self._by_id(int(parts[2]))
                return (200, schema) if schema else _not_found(40403, "Schema not found")
            if method == "GET" and parts == ["subjects"]:
                return 200, sorted(self._subjects)
            if parts[:1] == ["subjects"] and len(parts) >= 2:
                subject = parts[1]
                if method == "POST" and len(parts) == 3 and parts[2] == "versions":
                    self.requests["POST /subjects/versions"] += 1
                    return self._register(subject, body)
                if method == "POST" and len(parts) == 2:
                    return self._lookup(subject, body)
                if method == "GET" and len(parts) == 4 and parts[2] == "versions":
                    return self._version(subject, parts[3])
            return _not_found(404, f"no route {method} {path}")

    def _by_id(self, schema_id: int) -> dict[str, Any] | None:
        if FIRST_ID <= schema_id < FIRST_ID + len(self._schemas):
            return dict(self._schemas[schema_id - FIRST_ID])
        return None

    def _register(self, subject: str, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
            return 422, {"error_code": 42201, "message": "Invalid schema"}
        entry = {
            "schema": body["schema"],
            "schemaType": body.get("schemaType") or "AVRO",
            "references": body.get("references") or [],
        }
        try:
            schema_id = self._schemas.index(entry) + FIRST_ID
        except ValueError:
            self._schemas.append(entry)
            schema_id = len(self._schemas) - 1 + FIRST_ID
        versions = self._subjects.setdefault(subject, [])
        if schema_id not in versions:
            versions.append(schema_id)
        return 200, {"id": schema_id}

    def _lookup(self, subject: str, body: Any) -> tuple[int, Any]:
        for version, schema_id in enumerate(self._subjects.get(subject, []), 1):
            entry = self._schemas[schema_id - FIRST_ID]
            if isinstance(body, dict) and entry["schema"] == body.get("schema"):
                return 200, {"subject": subject, "id": schema_id, "version": version, **entry}
        return _not_found(40403, "Schema not found")

    def _version(self, subject: str, version: str) -> tuple[int, Any]:
        versions = self._subjects.get(subject)
        if not versions:
            return _not_found(40401, f"Subject '{subject}' not found.")
        number = len(versions) if version == "latest" else int(version) if version.isdigit() else 0
        if not 1 <= number <= len(versions):
            return _not_found(40402, f"Version {version} not found.")
        schema_id = versions[number - 1]
        return 200, {
            "subject": subject,
            "id": schema_id,
            "version": number,
            **self._schemas[schema_id - FIRST_ID],
        }


def _not_found(code: int, message: str) -> tuple[int, Any]:
    return 404, {"error_code": code, "message": message}


class _Handler(BaseHTTPRequestHandler):
    owner: SandboxRegistry
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read counters instead
        return

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        owner = self.owner
        with owner._lock:
            owner.requests["any"] += 1  # every request, answered or not (tests: "no HTTP from the loop")
        if not owner.available:
            status, body = 503, {"error_code": 50301, "message": "registry unavailable (sandbox outage)"}
        elif owner.user_info and self.headers.get("Authorization") != _basic(owner.user_info):
            status, body = 401, {"error_code": 401, "message": "Unauthorized"}
        else:
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = None
            status, body = owner.answer(method, urlsplit(self.path).path, parsed)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _basic(user_info: str) -> str:
    return "Basic " + base64.b64encode(user_info.encode()).decode()
