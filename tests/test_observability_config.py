"""The observability profile stays in step with the rest: Prometheus scrapes every service
compose runs, on the port it serves metrics on; every profile is torn down by `make down` and
the e2e session; the alerts documented are the alerts defined. (promtool itself checks the
config and the rules inside the container, in e2e/test_observability.py.)"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = (ROOT / "compose.yaml").read_text()
PROMETHEUS = (ROOT / "deploy/prometheus/prometheus.yml").read_text()
RULES = (ROOT / "deploy/prometheus/rules.yml").read_text()
# The gateway serves /metrics next to the WebSocket, on its own port.
GATEWAY_PORT = 8080


def compose_services() -> dict[str, str]:
    """Service name -> its block of compose.yaml."""
    body = COMPOSE.split("\nservices:\n", 1)[1]
    parts = re.split(r"^  ([a-z_]+):\n", body, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def scrape_ports() -> dict[str, int]:
    """Job name -> the port its DNS discovery scrapes."""
    jobs = re.split(r"^  - job_name: ", PROMETHEUS, flags=re.MULTILINE)[1:]
    ports = {}
    for job in jobs:
        name = job.split("\n", 1)[0].strip()
        port = re.search(r"^\s+port: (\d+)", job, flags=re.MULTILINE)
        if port:
            ports[name] = int(port.group(1))
    return ports


def test_prometheus_scrapes_every_python_service_on_its_metrics_port() -> None:
    services = compose_services()
    python = {name: block for name, block in services.items() if "<<: *python-service" in block}
    assert python, "no Python services found in compose.yaml"
    ports = scrape_ports()
    for name, block in python.items():
        metrics_port = re.search(r'^\s+METRICS_PORT: "?(\d+)"?', block, flags=re.MULTILINE)
        expected = GATEWAY_PORT if name == "ws_gateway" else int(metrics_port.group(1)) if metrics_port else None
        assert expected is not None, f"{name} serves no metrics: set METRICS_PORT in compose.yaml"
        assert ports.get(name) == expected, f"{name}: prometheus.yml scrapes {ports.get(name)}, it serves {expected}"


def test_every_profile_is_included_where_the_stack_is_listed_or_removed() -> None:
    profiles = set(re.findall(r"^\s+profiles: \[(\w+)\]", COMPOSE, flags=re.MULTILINE))
    assert {"peers", "observability"} <= profiles
    makefile = (ROOT / "Makefile").read_text()
    conftest = (ROOT / "e2e/conftest.py").read_text()
    for where, text in (("Makefile", makefile), ("e2e/conftest.py", conftest)):
        listed = re.search(r"^ALL_PROFILES :?= \"?([^\"\n]+)", text, flags=re.MULTILINE)
        assert listed, f"{where} has no ALL_PROFILES"
        assert set(re.findall(r"--profile (\w+)", listed.group(1))) == profiles, where


def test_documented_alerts_are_the_defined_ones() -> None:
    defined = set(re.findall(r"^\s+- alert: (\w+)", RULES, flags=re.MULTILINE))
    operations = (ROOT / "docs/operations.md").read_text()
    section = operations.split("## Observability profile", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)`", section, flags=re.MULTILINE))
    assert defined == documented
    assert {"NoResponder", "HighErrorRatio", "HighP99", "DeafLink"} <= defined
