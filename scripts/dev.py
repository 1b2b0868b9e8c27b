"""``make dev``: the whole system as host processes, no Docker.

Uses REDIS_URL when set, else starts a redis-server on a free loopback port; starts the
responder, the caller and the gateway (in demo mode, with the sample allow-list, unless the
environment says otherwise); waits until the gateway is ready and prints its URL.
A service that exits is started again after a second, like compose's restart policy.
Ctrl-C or SIGTERM stops everything it started (SIGTERM first, so each drains), in reverse.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from scripts.redis_process import RedisProcess

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("laravel_like_responder", "ws_gateway", "node_like_caller")
SAMPLE_ACTIONS = "configs,echo,sum,slow,fail,actions"  # not `info`: introspection stays internal
log = logging.getLogger("dev")


def _service(process: subprocess.Popen[bytes]) -> str:
    """The module a spawned ``python -m <service>`` runs."""
    args = process.args
    return str(args[2]) if isinstance(args, list) else str(args)


def wait_ready(url: str, processes: list[subprocess.Popen[bytes]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"{_service(process)} exited with {process.returncode} during start-up")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready within {timeout:.0f}s")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="[dev] %(message)s", stream=sys.stdout)
    stop = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    redis = None
    env = {**os.environ, "PYTHONPATH": str(ROOT / "services"), "PYTHONUNBUFFERED": "1"}
    if not env.get("REDIS_URL"):
        redis = RedisProcess().start()
        env["REDIS_URL"] = redis.url
        log.info("started redis-server on %s", redis.url)
    env.setdefault("GATEWAY_PORT", "8080")
    # A local demo: the page gets tokens from /demo/token (the gateway says so loudly), and
    # browsers may call the sample actions only. Production never sets demo mode.
    env.setdefault("GATEWAY_DEMO_MODE", "true")
    env.setdefault("GATEWAY_ALLOWED_ACTIONS", SAMPLE_ACTIONS)
    processes: list[subprocess.Popen[bytes]] = []
    code = 0

    def spawn(service: str) -> subprocess.Popen[bytes]:
        # Own process group: the terminal's Ctrl-C reaches us only, and we stop them in order.
        return subprocess.Popen([sys.executable, "-m", service], env=env, cwd=ROOT, start_new_session=True)

    try:
        processes.extend(spawn(service) for service in SERVICES)
        gateway = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
        wait_ready(gateway + "/readyz", processes)
        log.info("ready: open %s  (Ctrl-C stops everything)", gateway + "/")
        while not stop:
            for index, process in enumerate(processes):
                if process.poll() is not None and not stop:
                    log.warning("%s exited with %s; restarting it in 1s", SERVICES[index], process.returncode)
                    time.sleep(1)
                    processes[index] = spawn(SERVICES[index])
            time.sleep(0.2)
    except RuntimeError as exc:
        log.error("%s", exc)
        code = 1
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                code = 1
        if redis is not None:
            redis.stop()
        log.info("stopped: %s", ", ".join(f"{_service(p)}={p.returncode}" for p in processes))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
