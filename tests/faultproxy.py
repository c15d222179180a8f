"""A loopback TCP proxy that injects network faults in front of a real server (moto's S3).

It sits between every S3 client of a test (the driver, Ray actors and tasks in other
processes connect to its port like to any endpoint), which an in-process fsspec wrapper
could not. Faults are triggered by the HTTP request line, so they hit a chosen operation
whatever the timing and connection pooling (plain HTTP/1.1: the request line starts the
first segment a keep-alive connection sends after the previous response):

* ``on_request(pattern, "reset")``: the matching request is cut before it reaches the server;
* ``on_request(pattern, "lose-response")``: the server executes it, the client never hears
  back (the case that tests idempotency: a retried create-only PUT finds its own object);
* ``on_request(pattern, "stall", seconds=s)``: the request hangs ``s`` seconds, then is cut
  (the client's read timeout must fire);
* ``on_request(pattern, "outage", seconds=s)``: the request is cut and every connection is
  refused for ``s`` seconds (``math.inf``: until :meth:`clear`): open connections are cut too.

``outage()`` starts an outage now, ``clear()`` ends every fault. ``counters`` record what
really fired (since the last ``clear()``), so a test can assert that the fault happened. ``moto_server()`` starts moto's S3 server on loopback.
"""

from __future__ import annotations

import contextlib
import math
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

METHODS = (b"GET ", b"PUT ", b"HEAD ", b"POST ", b"DELETE ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server(buckets: tuple[str, ...], access_key: str, secret: str) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 (a free port) with ``buckets``; yields its endpoint URL."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access_key,
                              aws_secret_access_key=secret, region_name="us-east-1")
        for b in buckets:
            client.create_bucket(Bucket=b)
        yield endpoint
    finally:
        server.stop()


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the peer sees 'connection reset', as on a dead link."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):  # wakes a thread blocked in recv() on it (close alone does not)
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


@dataclass
class Rule:
    pattern: bytes
    action: str
    count: int = 1
    seconds: float = 0.0


@dataclass
class Counters:
    connections: int = 0
    requests: int = 0
    refused: int = 0  # connections reset during an outage
    cut: int = 0  # open connections cut when an outage began
    fired: dict[str, int] = field(default_factory=dict)  # action -> times a rule fired
    lines: list[str] = field(default_factory=list)  # request lines a rule fired on


class FaultProxy:
    """``with FaultProxy(upstream_port) as p:`` clients use ``p.endpoint``."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port()
        self.counters = Counters()
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._outage_until = 0.0
        self._open: set[socket.socket] = set()
        self._stop = threading.Event()
        self._srv: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ----------------------------------------------------------------------------- controls

    def on_request(self, pattern: str, action: str, *, count: int = 1, seconds: float = 0.0) -> None:
        if action not in ("reset", "lose-response", "stall", "outage"):
            raise ValueError(action)
        with self._lock:
            self._rules.append(Rule(pattern.encode(), action, count, seconds))

    def outage(self, seconds: float = math.inf) -> None:
        with self._lock:
            self._outage_until = time.monotonic() + seconds
            victims = list(self._open)
            self.counters.cut += len(victims)
        for s in victims:  # pooled keep-alive connections must not outlive the outage
            _reset(s)

    def clear(self) -> None:
        """No more faults; counters start again from zero."""
        with self._lock:
            self._rules.clear()
            self._outage_until = 0.0
            self.counters = Counters()

    def fired(self, action: str) -> int:
        with self._lock:
            return self.counters.fired.get(action, 0)

    def _in_outage(self) -> bool:
        return time.monotonic() < self._outage_until

    def _match(self, data: bytes) -> Rule | None:
        if not data.startswith(METHODS):
            return None
        line = data.split(b"\r\n", 1)[0]
        if b" HTTP/1." not in line:
            return None
        with self._lock:
            self.counters.requests += 1
            for r in self._rules:
                if r.count > 0 and r.pattern in line:
                    r.count -= 1
                    self.counters.fired[r.action] = self.counters.fired.get(r.action, 0) + 1
                    self.counters.lines.append(line.decode(errors="replace"))
                    return r
        return None

    # ----------------------------------------------------------------------------- running

    def start(self) -> FaultProxy:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(256)
        srv.settimeout(0.2)
        self._srv = srv
        self._thread = threading.Thread(target=self._accept_loop, name="faultproxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._srv is not None:
            self._srv.close()
        with self._lock:
            victims = list(self._open)
        for s in victims:
            _reset(s)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        assert self._srv is not None
        while not self._stop.is_set():
            try:
                client, _ = self._srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.counters.connections += 1
                refuse = self._in_outage()
                if refuse:
                    self.counters.refused += 1
            if refuse:
                _reset(client)
            else:
                threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            _reset(client)
            return
        upstream.settimeout(None)
        with self._lock:
            self._open.update((client, upstream))
        doomed = threading.Event()  # the response to the current request is to be lost

        def close_both() -> None:
            _reset(client)
            _reset(upstream)

        def downstream() -> None:  # server -> client
            try:
                while True:
                    data = upstream.recv(65536)
                    if not data:
                        break
                    if doomed.is_set() and not data.startswith(b"HTTP/1.1 100"):  # not "100 Continue"
                        close_both()
                        return
                    client.sendall(data)
            except OSError:
                pass
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_WR)

        t = threading.Thread(target=downstream, daemon=True)
        t.start()
        try:
            while True:  # client -> server
                data = client.recv(65536)
                if not data:
                    break
                rule = self._match(data)
                if rule is not None:
                    if rule.action == "lose-response":
                        doomed.set()
                    elif rule.action == "stall":
                        deadline = time.monotonic() + rule.seconds
                        while time.monotonic() < deadline and not self._stop.is_set():
                            time.sleep(0.05)
                        close_both()
                        break
                    else:
                        if rule.action == "outage":
                            self.outage(rule.seconds)
                        close_both()
                        break
                upstream.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)
        t.join(timeout=30)
        with self._lock:
            self._open.discard(client)
            self._open.discard(upstream)
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.close()
