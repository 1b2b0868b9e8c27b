"""The token-issuing examples a real backend copies (examples/issue_token.js with Node's
crypto, examples/issue_token.php with hash_hmac) mint tokens a real gateway accepts."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import aiohttp
import pytest
from pubsub_rpc import Responder, Settings

from .ws_frames import TEST_SECRET, connect, running_gateway

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = {
    "node": ["node", str(ROOT / "examples" / "issue_token.js")],
    "php": ["php", str(ROOT / "examples" / "issue_token.php")],
}


async def issue(language: str, secret_file: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_JWT_SECRET_FILE"] = str(secret_file)  # as a container reads a Docker secret
    process = await asyncio.create_subprocess_exec(
        *EXAMPLES[language], *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    return out.decode().strip()


@pytest.mark.parametrize("language", ["node", "php"])
async def test_example_tokens_open_the_gateway(language: str, settings: Settings, responder: Responder, tmp_path: Path) -> None:
    if shutil.which(EXAMPLES[language][0]) is None:
        pytest.fail(f"{EXAMPLES[language][0]} is not installed (make setup installs it)")
    secret_file = tmp_path / "gateway_jwt_secret"
    secret_file.write_text(TEST_SECRET + "\n")
    token = await issue(language, secret_file, f"{language}-user", "echo,sum", "120")
    async with running_gateway(settings) as server, aiohttp.ClientSession() as http:
        async with connect(http, server.make_url("/ws"), token) as ws:
            ready = await ws.next("ready")
            assert ready["sub"] == f"{language}-user" and ready["actions"] == ["echo", "sum"]
            assert (await ws.call(1, "sum", [40, 2]))["result"] == 42
            assert (await ws.call(2, "configs"))["code"] == "forbidden"  # allowed by the gateway, not by this token
        secret_file.write_text("another-secret-that-the-gateway-does-not-know-0123456789abcdef")
        forged = await issue(language, secret_file, "mallory", "*", "120")
        async with connect(http, server.make_url("/ws"), forged) as ws:
            assert await ws.closed() == 4001
