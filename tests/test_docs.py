"""The docs stay true: every setting is documented, every documented one exists."""

from __future__ import annotations

import re
from pathlib import Path

from pubsub_rpc.settings import ENV, SECRET_FILE_VARS

ROOT = Path(__file__).resolve().parent.parent


def test_readme_configuration_table_matches_settings() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z_]+)`", table, flags=re.MULTILINE))
    in_code = {name for name, _ in ENV.values()}
    assert in_code <= documented, f"undocumented: {sorted(in_code - documented)}"
    assert documented - in_code <= {"PYTHON_IMAGE"}, f"documented but unknown: {sorted(documented - in_code)}"


def test_compose_passes_only_real_settings() -> None:
    # The `peers` profile's Node.js and PHP containers have their own variables.
    compose = (ROOT / "compose.yaml").read_text().split("# The `peers` profile", 1)[0]
    passed = set(re.findall(r"^\s+([A-Z_]+): ", compose, flags=re.MULTILINE)) - {"PYTHON_IMAGE"}
    real = {name for name, _ in ENV.values()} | {name + "_FILE" for name in SECRET_FILE_VARS}  # Docker secrets
    assert passed <= real, passed - real


def test_operations_lists_the_acl_recipe_compose_really_uses() -> None:
    """docs/operations.md's recipe is deploy/redis/users.acl.template with C, P and hashes."""
    template = (ROOT / "deploy/redis/users.acl.template").read_text().splitlines()
    rules = [line for line in template if line.strip() and not line.startswith("#")]
    rendered = [
        re.sub(r"#\{hash_\w+\}", "#<sha256>", line)
        .replace("{php_channel}", "P")
        .replace("{channel}", "C")
        .replace("{{", "{")
        .replace("}}", "}")
        for line in rules
    ]
    documented = (ROOT / "docs/operations.md").read_text()
    assert "```\n" + "\n".join(rendered) + "\n```" in documented
