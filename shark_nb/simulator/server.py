"""The simulator as a real loopback HTTP/1.1 server (threaded, keep-alive).

    with serve_in_thread() as srv:            # port 0: a free port
        httpx.post(srv.base_url + "/images/generations", json={...})

``python -m shark_nb.simulator --port 8765`` runs the same server from the command line.

Each connection gets a thread, so many requests (well over 32) are served at once; responses
always carry Content-Length, so HTTP/1.1 keep-alive works. The API and the signed image URLs
are both served on the server's own address unless the simulator's config says otherwise.
A ``reset`` fault sends the status line, headers and part of the body, then closes the socket.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .service import SimResponse, Simulator

__all__ = ["ServerHandle", "serve_in_thread", "SimulatorHTTPServer"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "SharkSimulator/1.0"
    sys_version = ""
    #: Idle keep-alive connections are closed after this many seconds.
    timeout = 120
    #: TCP_NODELAY, as production HTTP servers set it: headers and body go out as separate
    #: writes, and with Nagle's algorithm a small body waits for the client's delayed ACK
    #: (~40 ms on Linux loopback), which no real gateway adds to a JSON answer.
    disable_nagle_algorithm = True
    server: "SimulatorHTTPServer"

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    return None
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            n = int(length)
        except ValueError:
            return None
        if n < 0:
            return None
        return self.rfile.read(n) if n else b""

    def _serve(self) -> None:
        try:
            body = self._read_body()
        except (ValueError, OSError):
            body = None
        if body is None:
            self.send_error(400, "Bad request body")
            self.close_connection = True
            return
        if self.path.startswith(("http://", "https://")):  # absolute-form request target
            url = self.path
        else:
            host = self.headers.get("Host") or f"{self.server.url_host}:{self.server.server_port}"
            url = f"http://{host}{self.path}"
        resp: SimResponse = self.server.sim.handle(self.command, url, self.headers, body)
        if resp.delay > 0:
            time.sleep(resp.delay)
        self.send_response(resp.status)
        length = resp.headers.get("Content-Length") or resp.headers.get("content-length") or str(len(resp.body))
        for k, v in resp.headers.items():
            if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(k, v)
        self.send_header("Content-Length", length)
        if resp.stream_fault == "reset":
            self.send_header("Connection", "keep-alive")
            self.end_headers()
            self.wfile.write(resp.body[: len(resp.body) // 2])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.end_headers()
        if self.command != "HEAD" and resp.body:
            self.wfile.write(resp.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.verbose:
            sys.stderr.write(f"[shark-sim] {self.address_string()} {format % args}\n")


class SimulatorHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer bound to one :class:`Simulator`; tracks connections to close them."""

    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sim: Simulator, verbose: bool = False) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.sim = sim
        self.verbose = verbose
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)
        host = address[0]
        self.url_host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(
            host, f"[{host}]" if ":" in host else host)

    def get_request(self):  # type: ignore[no-untyped-def]
        conn, addr = super().get_request()
        with self._conns_lock:
            self._conns.add(conn)
        return conn, addr

    def shutdown_request(self, request) -> None:  # type: ignore[no-untyped-def]
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
            self._conns.clear()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        # A client that hangs up mid-answer is normal (timeouts, resets); stay quiet about it.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
            return
        if self.verbose:
            super().handle_error(request, client_address)


class ServerHandle:
    """A running simulator server. ``close()`` (or leaving the ``with`` block) stops it."""

    def __init__(self, server: SimulatorHTTPServer, thread: threading.Thread, sim: Simulator) -> None:
        self.server = server
        self.thread = thread
        self.sim = sim
        self.host = server.url_host
        self.port = server.server_port
        #: ``http://127.0.0.1:PORT``
        self.url = f"http://{self.host}:{self.port}"
        #: ``http://127.0.0.1:PORT/api/v1`` (or the simulator's configured API base)
        self.base_url = sim.api_base
        self.files_base = sim.files_base
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.server.shutdown()
        self.server.close_connections()
        self.server.server_close()
        self.thread.join(timeout=5)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ServerHandle {self.base_url}{' closed' if self._closed else ''}>"


def serve_in_thread(sim: Simulator | None = None, host: str = "127.0.0.1", port: int = 0, *,
                    verbose: bool = False) -> ServerHandle:
    """Start the simulator server in a daemon thread and return its handle (port 0: any free port).

    Unless the simulator's config sets ``api_base``/``files_base``, both are served on this
    server's own address (``http://HOST:PORT/api/v1`` and ``http://HOST:PORT/files/...``).
    """
    sim = sim if sim is not None else Simulator()
    server = SimulatorHTTPServer((host, port), sim, verbose=verbose)
    origin = f"http://{server.url_host}:{server.server_port}"
    sim.bind(origin + "/api/v1", origin)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name=f"shark-sim-{server.server_port}", daemon=True)
    thread.start()
    return ServerHandle(server, thread, sim)
