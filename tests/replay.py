"""Stand-ins for hosted services that cannot run here (Slack, Jira, GitHub, webhooks) and a real SMTP server.

``ReplayServer`` is a real HTTP server on 127.0.0.1 that records every request exactly as it
arrived and answers with the responses a test queued, copied from the service's documentation.
``SmtpSink`` is aiosmtpd, a real SMTP server, in-process; it keeps every delivered message.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from release_rollback.demo import free_port

# Documented answers (Slack: api.slack.com changelog 2016-05-17 "errors for incoming webhooks";
# Jira: REST API "Create issue"; GitHub: REST "Create an issue").
SLACK_OK = (200, "text/html", "ok")
SLACK_CHANNEL_NOT_FOUND = (404, "text/html", "channel_not_found")
SLACK_ARCHIVED = (410, "text/html", "channel_is_archived")
JIRA_DOWN = (503, "text/html", "<html><body><h1>503 Service Unavailable</h1></body></html>")


def jira_created(key: str, issue_id: str = "10000", api: int = 2) -> tuple[int, str, str]:
    body = {"id": issue_id, "key": key, "self": f"https://jira.example.com/rest/api/{api}/issue/{issue_id}"}
    return 201, "application/json", json.dumps(body)


JIRA_BAD_REQUEST = (
    400,
    "application/json",
    json.dumps({"errorMessages": [], "errors": {"issuetype": "The issue type selected is invalid."}}),
)


def github_created(repo: str, number: int) -> tuple[int, str, str]:
    body = {
        "id": 1,
        "number": number,
        "state": "open",
        "html_url": f"https://github.com/{repo}/issues/{number}",
        "url": f"https://api.github.com/repos/{repo}/issues/{number}",
    }
    return 201, "application/json; charset=utf-8", json.dumps(body)


GITHUB_ISSUES_DISABLED = (
    410,
    "application/json; charset=utf-8",
    json.dumps({"message": "Issues are disabled for this repo", "documentation_url": "https://docs.github.com/rest"}),
)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ReplayServer:
    port: int = field(default_factory=free_port)
    requests: list[Request] = field(default_factory=list)
    queued: dict[str, deque] = field(default_factory=lambda: defaultdict(deque))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, path: str, *responses: tuple[int, str, str]) -> None:
        """Queue responses for POSTs to ``path``, in order; the last one repeats."""
        self.queued[path].extend(responses)

    def to(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def start(self) -> ReplayServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                server.requests.append(Request("POST", self.path, headers, body))
                queue = server.queued.get(self.path)
                if not queue:
                    status, ctype, text = 599, "text/plain", f"nothing queued for {self.path}"
                else:
                    status, ctype, text = queue.popleft() if len(queue) > 1 else queue[0]
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class SmtpSink:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it was given."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self.messages: list[dict[str, Any]] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                sink.messages.append(
                    {
                        "mail_from": envelope.mail_from,
                        "rcpt_tos": list(envelope.rcpt_tos),
                        "message": message_from_bytes(envelope.original_content, policy=policy.default),
                    }
                )
                return "250 Message accepted for delivery"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
