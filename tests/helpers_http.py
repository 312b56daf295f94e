"""A real threaded HTTP server on 127.0.0.1 with configurable faults, for download tests.

    with FaultyHTTPServer() as server:
        server.serve("/ok", body)                          # 200 with the bytes
        server.serve("/flaky", body, fail_times=2)         # 500 twice, then 200
        server.serve("/short", body, truncate_times=10**9) # Content-Length > bytes sent, then close
        server.serve("/gone", body, status=404)            # always 404
        url = server.url("/ok"); ...; server.hits["/ok"]   # number of requests seen per path
Unregistered paths answer 404 too.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    body: bytes
    status: int = 200  # status when not failing/truncating (e.g. 404 for "always not found")
    fail_times: int = 0  # first fail_times requests answer fail_status
    fail_status: int = 500
    truncate_times: int = 0  # then this many requests send only half the body, then close


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep test output quiet
        pass

    def do_GET(self):
        owner = self.server.owner
        with owner.lock:
            owner.hits[self.path] = owner.hits.get(self.path, 0) + 1
            n = owner.hits[self.path]
            route = owner.routes.get(self.path)
        self.close_connection = True
        if route is None:
            return self._reply(404, b"not found")
        if n <= route.fail_times:
            return self._reply(route.fail_status, b"server error")
        if n <= route.fail_times + route.truncate_times:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body[: len(route.body) // 2])
            self.wfile.flush()
            return  # the connection closes with the body short of Content-Length
        return self._reply(route.status, route.body)

    def _reply(self, status: int, body: bytes):
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: FaultyHTTPServer


class FaultyHTTPServer:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def serve(self, path: str, body: bytes, **faults) -> str:
        with self.lock:
            self.routes[path] = Route(body, **faults)
        return self.url(path)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> FaultyHTTPServer:
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
