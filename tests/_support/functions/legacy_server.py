"""A `command` function: any HTTP server on $PORT (Knative's container contract).

It answers a POST with ``legacy(<answer of third>)``, calling `third` through its sidecar's
egress the way a function in any language would: plain HTTP to $XDT_EGRESS.
"""

import os
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        request = urllib.request.Request(
            f"{os.environ['XDT_EGRESS']}/invoke/third", data=body, method="POST"
        )
        with urllib.request.urlopen(request) as answer:
            result = b"legacy(" + answer.read() + b")"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(result)))
        self.end_headers()
        self.wfile.write(result)

    def log_message(self, format: str, *args: object) -> None:
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
