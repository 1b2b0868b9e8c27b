"""A real redis-server on a free loopback port, for tests (and ``make dev``/bench)."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    def __init__(self, port: int | None = None, extra_args: Sequence[str] = ()) -> None:
        """``extra_args`` go to redis-server as given, e.g. ``["--aclfile", path]``."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: apt-get install redis-server (make test does it as root)")
        self.binary = binary
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._workdir = tempfile.mkdtemp(prefix="redis-test-")
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> RedisProcess:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._workdir,
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode} (port {self.port} taken?)")
            if self.ping():
                return self
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on port {self.port} did not answer within {timeout}s")

    async def start_async(self, timeout: float = 10.0) -> RedisProcess:
        """``start()`` from async code: in a thread, so the event loop (and every client
        retrying on it) keeps running while the server comes up."""
        return await asyncio.to_thread(self.start, timeout)

    async def stop_async(self) -> None:
        await asyncio.to_thread(self.stop)

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its sockets (the kernel still accepts connections and
        buffers what clients send) but answers nothing: a hung or half-open Redis."""
        assert self.process is not None, "not running"
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after ``freeze()``."""
        assert self.process is not None, "not running"
        self.process.send_signal(signal.SIGCONT)

    def ping(self) -> bool:
        """Whether it answers; with the default user off, NOAUTH is an answer too."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def stop(self) -> None:
        """SIGKILL (a crash: no goodbye to clients), even when frozen."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> RedisProcess:
        return self.start()

    def close(self) -> None:
        """Stop the server and remove its working directory."""
        self.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __exit__(self, *exc_info: object) -> None:
        self.close()
