"""A loopback TCP proxy that adds a fixed latency to every HTTP/1.1 request: S3 far away, on one machine.

It relays bytes between a client and one upstream server, one upstream connection per client
connection, so keep-alive stays as the client uses it. It reads the client's side as HTTP/1.1
(request heads, bodies framed by Content-Length or chunked encoding) and holds back each request
head by `delay_s` before forwarding it: every request costs one round trip of `delay_s`, however
many requests a connection carries. A request sent with `Expect: 100-continue` costs a second
round trip, as on a real network: its body is held back by `delay_s` too, once the client sends
it (after the server's `100 Continue`). Responses are relayed untouched.

In a process (tests)::

    with LatencyProxy(("127.0.0.1", moto_port), delay_s=0.04) as proxy:
        endpoint = proxy.url

As its own process (benchmarks: its threads then take nothing from the measured process)::

    python -m bench.latency_proxy --target 127.0.0.1:9000 --delay-ms 40 --port 9001

The process prints `listening on http://127.0.0.1:PORT` once it accepts connections, and on
SIGUSR1 one JSON line with the requests seen since the previous one, by method, and resets them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import BinaryIO

MAX_HEAD_BYTES = 64 * 1024
CHUNK = 64 * 1024


class ProtocolError(Exception):
    """The client sent something this proxy cannot frame as HTTP/1.1."""


class LatencyProxy:
    """Relays to `target`, holding back each request by `delay_s` (see the module's docstring)."""

    def __init__(
        self, target: tuple[str, int], delay_s: float, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.target = target
        self.delay_s = delay_s
        self._listener = socket.create_server((host, port))
        self.host, self.port = self._listener.getsockname()[:2]
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = threading.Event()
        self._accepter: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> LatencyProxy:
        self._accepter = threading.Thread(target=self._accept, daemon=True, name="latency-proxy")
        self._accepter.start()
        return self

    def stop(self) -> None:
        self._closed.set()
        # shutdown() wakes the blocked accept(); close() alone does not on Linux.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for sock in list(self._open):
                with contextlib.suppress(OSError):
                    sock.close()
        if self._accepter is not None:
            self._accepter.join(timeout=5)

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def take_counts(self) -> dict[str, int]:
        """Requests seen since the last call, by method; resets the count."""
        with self._lock:
            counts = dict(self._counts)
            self._counts.clear()
        return counts

    # -- relaying --------------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _track(self, *socks: socket.socket) -> None:
        with self._lock:
            self._open.update(socks)

    def _untrack(self, *socks: socket.socket) -> None:
        with self._lock:
            self._open.difference_update(socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.close()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            # Small heads and bodies must not wait for Nagle's timer: that would be latency we did not add.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._track(client, upstream)
        answers = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
        answers.start()
        try:
            with client.makefile("rb") as reader:
                self._requests(reader, upstream)
        except (OSError, ProtocolError):
            pass
        finally:
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)
            answers.join(timeout=30)
            self._untrack(client, upstream)

    def _requests(self, reader: BinaryIO, upstream: socket.socket) -> None:
        while not self._closed.is_set():
            head = _read_head(reader)
            if head is None:
                return
            method, headers = _parse_head(head)
            with self._lock:
                self._counts[method] += 1
            time.sleep(self.delay_s)
            upstream.sendall(head)
            # The body follows the server's 100 Continue: the second round trip of that request.
            hold = self.delay_s if headers.get("expect", "").lower() == "100-continue" else 0.0
            for piece in _body(reader, headers):
                if hold:
                    time.sleep(hold)
                    hold = 0.0
                upstream.sendall(piece)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(CHUNK):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _read_head(reader: BinaryIO) -> bytes | None:
    """The request line and headers through the blank line; None at a clean end of the connection."""
    lines: list[bytes] = []
    size = 0
    while True:
        line = reader.readline(MAX_HEAD_BYTES + 1)
        if not line:
            if lines:
                raise ProtocolError("connection closed inside a request head")
            return None
        if not lines and line in (b"\r\n", b"\n"):
            continue  # stray CRLF between requests is allowed (RFC 9112 2.2)
        lines.append(line)
        size += len(line)
        if size > MAX_HEAD_BYTES:
            raise ProtocolError("request head too large")
        if line in (b"\r\n", b"\n"):
            return b"".join(lines)


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    first, *rest = head.decode("latin-1").split("\n")
    parts = first.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ProtocolError(f"not an HTTP/1.x request line: {first[:80]!r}")
    headers: dict[str, str] = {}
    for line in rest:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return parts[0], headers


def _body(reader: BinaryIO, headers: dict[str, str]) -> Iterator[bytes]:
    """The request body's bytes as they arrive, framing included, ending where the request ends."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = reader.readline(1024)
            if not size_line.endswith(b"\n"):
                raise ProtocolError("bad chunk size line")
            yield size_line
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                # Trailer fields, then the blank line that ends the message.
                while (line := reader.readline(MAX_HEAD_BYTES)) not in (b"\r\n", b"\n"):
                    if not line:
                        raise ProtocolError("connection closed inside chunk trailers")
                    yield line
                yield line
                return
            yield from _exactly(reader, size + 2)  # chunk data and its CRLF
    else:
        length = int(headers.get("content-length") or 0)
        yield from _exactly(reader, length)


def _exactly(reader: BinaryIO, n: int) -> Iterator[bytes]:
    while n > 0:
        # read1 returns what is buffered or arrives next: a large upload streams through.
        data = reader.read1(min(n, CHUNK))  # type: ignore[attr-defined]
        if not data:
            raise ProtocolError("connection closed inside a request body")
        n -= len(data)
        yield data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency_proxy", description=__doc__.split("\n")[0])
    parser.add_argument("--target", required=True, help="upstream HOST:PORT")
    parser.add_argument("--delay-ms", type=float, required=True, help="added per request (round trip)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free one)")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    proxy = LatencyProxy((host or "127.0.0.1", int(port)), args.delay_ms / 1000, args.host, args.port)

    def report(*_: object) -> None:
        print(json.dumps({"requests": proxy.take_counts()}), flush=True)

    signal.signal(signal.SIGUSR1, report)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    proxy.start()
    print(f"listening on {proxy.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        proxy.stop()


if __name__ == "__main__":
    sys.exit(main())
