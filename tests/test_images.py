"""The Dockerfiles and the locks they install: each service's Dockerfile is copyable on its
own, so they must not drift apart (template_service is what `make new-service` copies);
and the lock must pin and hash every package."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ["laravel_like_responder", "node_like_caller", "ws_gateway", "template_service"]
# The gateway serves HTTP: its own port and health check, nothing else differs.
GATEWAY_ONLY = re.compile(r"^(ENV GATEWAY_HOST=.*|EXPOSE 8080|ENV HEARTBEAT_FILE=.*)$\n?", re.M)


def normalised(service: str) -> str:
    text = (ROOT / "services" / service / "Dockerfile").read_text().replace(service, "SERVICE")
    text = text.replace('"http://127.0.0.1:8080/readyz"', '"/tmp/heartbeat"')
    return GATEWAY_ONLY.sub("", text)


def test_the_service_dockerfiles_differ_only_in_the_service() -> None:
    first = normalised(SERVICES[0])
    for service in SERVICES[1:]:
        assert normalised(service) == first, f"services/{service}/Dockerfile drifted from services/{SERVICES[0]}/Dockerfile"


@pytest.mark.parametrize("service", SERVICES)
def test_each_image_installs_the_lock_byte_compiles_and_runs_unprivileged(service: str) -> None:
    text = (ROOT / "services" / service / "Dockerfile").read_text()
    assert "pip install --require-hashes --no-deps -r /src/requirements.txt" in text
    assert "compileall" in text
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and not user[-1].startswith(("0", "root")), "the runtime stage must not run as root"
    assert f"ARG SERVICE={service}" in text
    assert re.search(r"^ENV LOG_FORMAT=json\b", text, re.M), "the images log one JSON object per line"


@pytest.mark.parametrize("lock", ["requirements.txt", "requirements-dev.txt"])
def test_every_locked_package_is_pinned_with_hashes(lock: str) -> None:
    requirements = re.split(r"\n(?=[A-Za-z])", (ROOT / lock).read_text())
    entries = [entry for entry in requirements if entry and entry[0].isalpha()]
    assert entries
    for entry in entries:
        name = entry.split()[0]
        assert "==" in name, f"{lock}: {name} is not pinned"
        assert "--hash=sha256:" in entry, f"{lock}: {name} has no hash"


def test_the_dev_lock_agrees_with_the_runtime_lock() -> None:
    def pins(lock: str) -> dict[str, str]:
        found = re.findall(r"^([A-Za-z0-9_.\-]+)==([^ ;\\\n]+)", (ROOT / lock).read_text(), re.M)
        return {name.lower(): version for name, version in found}

    runtime, dev = pins("requirements.txt"), pins("requirements-dev.txt")
    assert {name: dev.get(name) for name in runtime} == runtime
