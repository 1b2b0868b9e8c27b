"""The real responder service (``python -m laravel_like_responder``) in a process of its
own, for tests that read what a running service exposes: its /metrics, its log lines."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from pubsub_rpc import Settings

from scripts.redis_process import free_port

ROOT = Path(__file__).resolve().parent.parent

# (sample name, sorted labels) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class LiveResponder:
    process: subprocess.Popen[bytes]
    settings: Settings  # the same channel and pattern, for a Caller in the test
    log: Path
    metrics_url: str

    def log_lines(self) -> list[bytes]:
        return [line for line in self.log.read_bytes().splitlines() if line.strip()]


def scrape(url: str, timeout: float = 5.0) -> tuple[Samples, set[str]]:
    """GET a /metrics URL: its samples, and the family names it declares."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    families = list(text_string_to_metric_families(text))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}
    return samples, {f.name for f in families}


@contextlib.contextmanager
def live_responder(redis_url: str, tmp_path: Path, **env: str) -> Iterator[LiveResponder]:
    channel = f"live_{uuid.uuid4().hex[:8]}"
    port = free_port()
    settings = Settings(redis_url=redis_url, channel=channel, responder_pattern=f"{channel}_sender", service="live_test")
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "services"), str(ROOT / "lib/pubsub_rpc/src")]),
        "REDIS_URL": redis_url,
        "RPC_CHANNEL": channel,
        "RPC_RESPONDER_PATTERN": settings.responder_pattern,
        "PUSH_INTERVAL": "0",
        "METRICS_PORT": str(port),
        "METRICS_HOST": "127.0.0.1",
        "LOG_FORMAT": "json",
        **env,
    }
    log = tmp_path / f"responder-{channel}.log"
    with log.open("wb") as out:
        argv = [sys.executable, "-m", "laravel_like_responder"]
        process = subprocess.Popen(argv, env=environ, cwd=ROOT, stdout=out, stderr=out)
    try:
        yield LiveResponder(process, settings, log, f"http://127.0.0.1:{port}/metrics")
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
