"""The health and version checks of app_service and code_rollback (module_utils/service.py)."""

from __future__ import annotations

import base64
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        auth = self.headers.get("Authorization")
        if self.path == "/private" and auth != "Basic " + base64.b64encode(b"ops:s3cret").decode():
            code, body = 401, b"who are you"
        elif self.path == "/redirect":
            code, body = 302, b"elsewhere"
        elif self.path.startswith("/version"):
            code, body = 200, b'{"version": "1.4.2", "query": "%s"}' % self.path.encode()
        else:
            code, body = {"/health": 200, "/private": 200, "/broken": 500}.get(self.path, 404), b"ok"
        self.send_response(code)
        if code == 302:
            self.send_header("Location", "/health")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_status_code_is_returned_whatever_it_is(mu, url):
    assert mu.service._get(url + "/health", 5) == (200, "ok")
    assert mu.service._get(url + "/broken", 5)[0] == 500
    assert mu.service._get(url + "/redirect", 5)[0] == 302  # redirects are not followed


def test_credentials_in_the_url_are_sent_as_basic_auth(mu, url):
    assert mu.service._get(url + "/private", 5)[0] == 401
    assert mu.service._get(url.replace("http://", "http://ops:s3cret@") + "/private", 5) == (200, "ok")


def test_the_query_string_is_sent(mu, url):
    code, body = mu.service._get(url + "/version?full=1", 5)
    assert code == 200 and "/version?full=1" in body


def test_no_answer_is_none_with_the_reason(mu):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, why = mu.service._get(f"http://127.0.0.1:{port}/health", 2)
    assert code is None and "ConnectionRefusedError" in why
    assert mu.service._get("ftp://127.0.0.1/health", 2)[0] is None


def test_verify_polls_until_the_version_is_the_expected_one(mu, url):
    p = dict(health_url=url + "/health", version_url=url + "/version", expect_version="1.4.2", retries=2, delay=0)
    assert mu.service.verify(dict(p, timeout=5)) == (True, 200, "1.4.2", 1)
    ok, _health, version, attempts = mu.service.verify(dict(p, expect_version="1.4.3", timeout=5))
    assert not ok and version == "1.4.2" and attempts == 2
