"""A `command` function: any HTTP server on $PORT. It digests the body it receives (however
the bytes travelled, it sees an ordinary request body), then sends the same bytes on to
`digest` with a plain HTTP POST to its sidecar's egress, and answers both digests."""

import hashlib
import os
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def describe(data: bytes) -> str:
    return f"{len(data)}:{hashlib.sha256(data).hexdigest()[:16]}"


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        request = urllib.request.Request(
            f"{os.environ['XDT_EGRESS']}/invoke/digest", data=body, method="POST"
        )
        with urllib.request.urlopen(request) as answer:
            onward = answer.read().decode()
        result = f"{describe(body)} {onward}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(result)))
        self.end_headers()
        self.wfile.write(result)

    def log_message(self, format: str, *args: object) -> None:
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
