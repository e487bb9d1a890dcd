"""A `command` function for the HTTP contract tests: answers any method with what it saw."""

import json
import os
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length) if length else b""
        url = urllib.parse.urlsplit(self.path)
        seen = {
            "method": self.command,
            "path": url.path,
            "query": url.query,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode(),
        }
        print(f"command saw {self.command} {url.path}", flush=True)
        print("a line on stderr", file=sys.stderr, flush=True)
        answer = json.dumps(seen).encode()
        status = int(urllib.parse.parse_qs(url.query).get("status", ["200"])[0])
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Command", "yes")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
