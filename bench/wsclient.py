"""A lean WebSocket client for load generation only: the handshake, then text frames split
out of the byte stream in ``data_received``. aiohttp's client costs more CPU per message
than the gateway does, which on two shared cores would measure the generator instead.

Client-to-server frames use an all-zero mask key (valid framing; a real browser randomises
it). Not for production use: no TLS, no fragmentation, no control-frame replies beyond pong.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Callable
from typing import cast
from urllib.parse import urlsplit

ZERO_MASK = b"\x00\x00\x00\x00"


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
        assert self.transport is not None
        self.transport.write(client_frame(payload))


async def connect(url: str, on_text: Callable[[bytes], None]) -> WsProtocol:
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    _, protocol = await loop.create_connection(lambda: WsProtocol(on_text, parts.netloc), host, port)
    await protocol.upgraded
    return protocol
