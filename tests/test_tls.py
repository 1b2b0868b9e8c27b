"""TLS end to end: redis-py does the TLS handshake, then our hot path runs on the TLS
transport (``set_protocol`` on the SSL transport). A throwaway CA, a TLS-only redis-server."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from laravel_like_responder.actions import register
from pubsub_rpc import Caller, Responder, Settings

from scripts.redis_process import free_port


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    if shutil.which("openssl") is None:
        pytest.fail("the TLS test needs the openssl command")
    certs = tmp_path_factory.mktemp("tls")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.crt", cwd=certs)  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr",
            cwd=certs)  # fmt: skip
    (certs / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
            "-extfile", "san.ext", "-out", "server.crt", cwd=certs)  # fmt: skip
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--tls-cert-file", "server.crt", "--tls-key-file", "server.key", "--tls-ca-cert-file", "ca.crt",
         "--tls-auth-clients", "no", "--dir", str(certs)],
        cwd=certs, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    deadline = time.monotonic() + 10
    while True:
        assert process.poll() is None, "redis-server exited: built without TLS?"
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1"),
            ):
                break
        except OSError:
            assert time.monotonic() < deadline, "TLS redis-server did not come up"
            time.sleep(0.05)
    yield port, certs / "ca.crt"
    process.kill()
    process.wait(timeout=10)


async def test_round_trip_and_pushes_over_tls(tls_redis: tuple[int, Path], settings: Settings) -> None:
    port, ca = tls_redis
    secure = dataclasses.replace(settings, redis_url=f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}")
    responder = Responder(secure)
    register(responder)
    async with responder, Caller(secure) as caller:
        assert await caller.call("sum", [1, 2, 3]) == 6
        results = await asyncio.gather(*(caller.call("echo", n) for n in range(500)))
        assert results == list(range(500))
        async with caller.events() as events:
            await responder.push("configs", {"tls": True})
            assert (await asyncio.wait_for(anext(events), 5)).data == {"tls": True}
