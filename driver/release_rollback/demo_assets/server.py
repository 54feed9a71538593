"""The demo application: one per demo host, serving /health, /version and /metrics.

It reports the release it was started from (the REVISION file beside it). The bad release answers
/health with 500, which is why the demo rolls it back.
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSION = (HERE / "REVISION").read_text().strip()
BROKEN = (HERE / "BROKEN_RELEASE").exists()
REQUESTS = {"ok": 0, "error": 0}


class Handler(BaseHTTPRequestHandler):
    def _send(self, code, body, ctype="application/json"):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            if BROKEN:
                REQUESTS["error"] += 1
                self._send(500, json.dumps({"status": "failing", "version": VERSION}))
            else:
                REQUESTS["ok"] += 1
                self._send(200, json.dumps({"status": "ok", "version": VERSION}))
        elif self.path == "/version":
            self._send(200, json.dumps({"version": VERSION}))
        elif self.path == "/metrics":
            lines = [
                f'demo_requests_total{{code="200"}} {REQUESTS["ok"]}',
                f'demo_requests_total{{code="500"}} {REQUESTS["error"]}',
            ]
            self._send(200, "\n".join(lines) + "\n", "text/plain")
        else:
            self._send(404, json.dumps({"error": "not found"}))

    def log_message(self, fmt, *args):
        pass


def main():
    port = int(sys.argv[sys.argv.index("--port") + 1])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"demo app {VERSION} (pid {os.getpid()}) on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
