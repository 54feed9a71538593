"""A local HTTP server standing in for a hosted flag service (LaunchDarkly, Flagsmith, in-house).

It is given the exact exchanges to expect, in order: method, path with query, the headers that must
be present with their exact values, the exact JSON body; it answers each with the documented
response. A request that differs is recorded in ``errors`` and answered 599, so the test sees it.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

NO_BODY = object()


@dataclass
class Exchange:
    method: str
    path: str
    status: int = 200
    reply: Any = None  # JSON-serialisable answer, or None for an empty body
    headers: dict[str, str] = field(default_factory=dict)  # request headers that must match exactly
    body: Any = NO_BODY  # the exact JSON request body; NO_BODY: the request must have none
    reply_headers: dict[str, str] = field(default_factory=dict)


class ReplayServer:
    def __init__(self) -> None:
        self.expected: list[Exchange] = []
        self.seen: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, reply, headers = server._answer(self.command, self.path, dict(self.headers.items()), raw)
                data = b"" if reply is None else json.dumps(reply).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def expect(self, *exchanges: Exchange) -> ReplayServer:
        self.expected.extend(exchanges)
        return self

    def _answer(self, method: str, path: str, headers: dict[str, str], raw: bytes):
        with self.lock:
            self.seen.append({"method": method, "path": path, "headers": headers, "body": raw.decode()})
            if not self.expected:
                self.errors.append(f"unexpected request {method} {path}")
                return 599, {"error": "unexpected request"}, {}
            exp = self.expected.pop(0)
            problems = []
            if (method, path) != (exp.method, exp.path):
                problems.append(f"expected {exp.method} {exp.path}, got {method} {path}")
            lower = {k.lower(): v for k, v in headers.items()}
            for key, value in exp.headers.items():
                if lower.get(key.lower()) != value:
                    problems.append(f"header {key}: expected {value!r}, got {lower.get(key.lower())!r}")
            if exp.body is NO_BODY:
                if raw:
                    problems.append(f"expected no body, got {raw[:200]!r}")
            else:
                try:
                    got = json.loads(raw or b"null")
                except ValueError:
                    got = raw
                if got != exp.body:
                    problems.append(f"body: expected {exp.body!r}, got {got!r}")
            if problems:
                self.errors.extend(problems)
                return 599, {"error": "; ".join(problems)}, {}
            return exp.status, exp.reply, exp.reply_headers

    def __enter__(self) -> ReplayServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def check(self) -> None:
        """Every request was the expected one and every expected request came."""
        assert self.errors == [], self.errors
        assert self.expected == [], f"requests that never came: {[(e.method, e.path) for e in self.expected]}"
