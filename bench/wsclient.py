"""A lean WebSocket client for load generation only: the handshake, then text frames split
out of the byte stream in ``data_received``. aiohttp's client costs more CPU per message
than the gateway does, which on two shared cores would measure the generator instead.

Client-to-server frames use an all-zero mask key (valid framing; a real browser randomises
it; the gateway unmasks every frame whatever the key, so its cost is the same). Frames sent
during one loop tick leave in one write per socket, as a browser's do when a page sends in a
burst: the bench then measures the gateway, not the generator's syscalls (each write on
loopback also runs the receiver's TCP path on the writer's CPU). Not for production use: no
TLS, no fragmentation, no control-frame replies beyond pong.

The gateway wants a token: the bench's gateways verify HS256 with ``BENCH_SECRET`` (see
``gateway_env``), and ``connect`` authenticates with the first frame and waits for `ready`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import time
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

import jwt
import orjson

ZERO_MASK = b"\x00\x00\x00\x00"
BENCH_SECRET = "bench-only-secret-0123456789abcdef0123456789abcdef0123456789abcdef"


def bench_token(sub: str = "bench", ttl: float = 3600.0) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + ttl), "actions": ["*"]}, BENCH_SECRET, algorithm="HS256")


def gateway_env() -> dict[str, str]:
    """What a bench gateway needs: the bench secret, and limits out of the way so the
    throughput measured is the gateway's, not its rate limiter's."""
    return {
        "GATEWAY_JWT_SECRET": BENCH_SECRET,
        "GATEWAY_ALLOWED_ACTIONS": "echo,sum,configs",
        "GATEWAY_RATE_LIMIT": "1e9",
        "GATEWAY_RATE_BURST": "1000000000",
        "GATEWAY_MAX_CONNECTIONS_PER_IP": "100000",
        "GATEWAY_MAX_CONNECTIONS": "100000",
        "GATEWAY_MAX_FRAME_BYTES": "1048576",
    }


def client_frame(payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        header = bytes((0x81, 0x80 | size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 0x80 | 127, size)
    return header + ZERO_MASK + payload


class WsProtocol(asyncio.Protocol):
    def __init__(self, on_text: Callable[[bytes], None], host: str) -> None:
        self.on_text = on_text
        self.host = host
        self.buffer = bytearray()
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._out: list[bytes] = []  # frames to write at the end of this loop tick

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transport is not an asyncio.Transport subclass, but it has the same methods.
        self.transport = cast(asyncio.Transport, transport)
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            f"GET /ws HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded.done():
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in bytes(buffer[: buffer.find(b"\r\n")]):
                self.upgraded.set_exception(ConnectionError(bytes(buffer[:end]).decode(errors="replace")))
                return
            del buffer[: end + 4]
            self.upgraded.set_result(None)
        offset = 0
        while len(buffer) - offset >= 2:
            opcode, size = buffer[offset] & 0x0F, buffer[offset + 1] & 0x7F
            start = offset + 2
            if size == 126:
                if len(buffer) - offset < 4:
                    break
                size, start = struct.unpack_from("!H", buffer, offset + 2)[0], offset + 4
            elif size == 127:
                if len(buffer) - offset < 10:
                    break
                size, start = struct.unpack_from("!Q", buffer, offset + 2)[0], offset + 10
            if len(buffer) < start + size:
                break
            if opcode == 1:
                self.on_text(bytes(buffer[start : start + size]))
            elif opcode == 9 and self.transport is not None:  # ping -> pong
                self.transport.write(bytes((0x8A, 0x80 | size)) + ZERO_MASK + bytes(buffer[start : start + size]))
            offset = start + size
        del buffer[:offset]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def send_text(self, payload: bytes) -> None:
        """Queue a frame; the frames queued in one loop tick leave in one write."""
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(client_frame(payload))

    def _flush(self) -> None:
        data, self._out = b"".join(self._out), []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


async def connect(url: str, on_text: Callable[[bytes], None], token: str | None = None) -> WsProtocol:
    """Upgrade; with a token, authenticate and return once the gateway said `ready`
    (frames before it, hello and ready, are not passed to ``on_text``)."""
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def until_ready(payload: bytes) -> None:
        if ready.done():
            on_text(payload)
        elif b'"type":"ready"' in payload:
            ready.set_result(None)
        elif b'"type":"hello"' not in payload:
            ready.set_exception(ConnectionError(f"authentication refused: {payload[:200]!r}"))

    handler = on_text if token is None else until_ready
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    _, protocol = await loop.create_connection(lambda: WsProtocol(handler, parts.netloc), host, port)
    await protocol.upgraded
    if token is not None:
        protocol.send_text(orjson.dumps({"type": "auth", "token": token}))
        closed = asyncio.ensure_future(protocol.closed)
        done, _ = await asyncio.wait([ready, closed], timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            closed.cancel()
            raise ConnectionError("the gateway closed the socket or did not answer the auth frame")
        closed.cancel()
        ready.result()
    return protocol
