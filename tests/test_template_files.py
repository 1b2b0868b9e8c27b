"""`make new-service` copies the template service faithfully (tests/test_images.py keeps its
Dockerfile in step with the others; e2e/test_template.py builds and calls the copy)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCAFFOLD = ROOT / "scripts" / "new_service.sh"


def test_new_service_copies_renames_and_brings_the_library(tmp_path: Path) -> None:
    result = subprocess.run(["bash", str(SCAFFOLD), "orders", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    service = tmp_path / "services" / "orders"
    assert sorted(p.name for p in service.iterdir()) == ["Dockerfile", "__init__.py", "__main__.py", "actions.py"]
    for file in service.iterdir():
        assert "template_service" not in file.read_text(), file
    assert 'NAME = "orders"' in (service / "__main__.py").read_text()
    assert (tmp_path / "lib" / "pubsub_rpc" / "src" / "pubsub_rpc" / "caller.py").exists()
    assert not list((tmp_path / "lib").rglob("__pycache__")) and not list((tmp_path / "lib").rglob("*.egg-info"))
    assert (tmp_path / "requirements.txt").exists() and (tmp_path / ".dockerignore").exists()


def test_new_service_refuses_bad_names_and_never_overwrites(tmp_path: Path) -> None:
    def scaffold(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(SCAFFOLD), name, str(tmp_path)], capture_output=True, text=True, timeout=30)

    assert scaffold("Orders-2").returncode == 1
    assert scaffold("orders").returncode == 0
    again = scaffold("orders")
    assert again.returncode == 1 and "exists" in again.stderr
