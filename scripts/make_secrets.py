"""Generate the compose stack's secrets once, into the git-ignored ``.secrets/``.

``make up`` and the e2e suite run this before compose. It creates what is missing and never
overwrites a password (delete a file to rotate it):

- ``redis-<user>.password`` for each Redis ACL user (64 hex chars, 256 random bits);
- ``gateway-jwt.secret`` (HS256 key for browser tokens, 256 random bits);
- ``redis-users.acl``, Redis's ACL file rendered from ``deploy/redis/users.acl.template``
  with SHA-256 hashes only, so the Redis container never holds another user's password.

Modes: the directory is 0700, so on the host only its owner reaches the files. The files are
0644 because compose (without swarm) bind-mounts a secret with the host file's owner and mode,
and the containers read them as other users (uid 10001 in our images, ``redis`` in Redis's);
each container sees only the secrets its service lists. Stdlib only: runs before ``make setup``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "redis" / "users.acl.template"
DEFAULT_DIR = ROOT / ".secrets"
DEFAULT_CHANNEL = "laravel_database_general"
DEFAULT_PHP_CHANNEL = "laravel_database_php"  # the PHP seed peer of the `peers` profile
USERS = ("healthcheck", "responder", "caller", "gateway", "seed_caller", "seed_responder", "cluster_admin")
# Redis's own users, for the `ha` profile: replicas sync as `replication`, sentinels watch and
# reconfigure the nodes as `sentinel` (deploy/ha/).
INFRA_USERS = ("replication", "sentinel")
# Users on the sentinels themselves (deploy/ha/sentinel.sh), not on Redis: the services'.
SENTINEL_USERS = ("sentinel_client",)
ACL_FILE = "redis-users.acl"
JWT_FILE = "gateway-jwt.secret"
# A channel name goes into ACL glob patterns and a space-separated rule line: keep it plain.
_PLAIN_CHANNEL = re.compile(r"[A-Za-z0-9_.:\-]{1,200}")


def password_file(user: str) -> str:
    return f"redis-{user}.password"


def password_hash(password: str) -> str:
    """What Redis's ``#<hash>`` rule wants: SHA-256 of the password, lower-case hex."""
    return hashlib.sha256(password.encode()).hexdigest()


def render_acl(passwords: Mapping[str, str], channel: str = DEFAULT_CHANNEL, php_channel: str = DEFAULT_PHP_CHANNEL) -> str:
    """The ACL file for these passwords and channels (also used by tests/test_acl.py)."""
    for name in (channel, php_channel):
        if not _PLAIN_CHANNEL.fullmatch(name):
            raise ValueError(f"channel {name!r}: use letters, digits and _ . : - only (it becomes an ACL glob)")
    hashes = {f"hash_{user}": password_hash(passwords[user]) for user in USERS + INFRA_USERS}
    lines = TEMPLATE.read_text().splitlines()
    kept = [line for line in lines if line and not line.startswith("#")]
    rules = [line.format(channel=channel, php_channel=php_channel, **hashes) for line in kept]
    return "\n".join(rules) + "\n"


def _write_new(path: Path, text: str) -> None:
    """Create ``path`` with mode 0644 (see the module docstring), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(tmp, 0o644)  # whatever the umask
    os.replace(tmp, path)


def ensure_secrets(
    directory: Path = DEFAULT_DIR, channel: str = DEFAULT_CHANNEL, php_channel: str = DEFAULT_PHP_CHANNEL
) -> list[str]:
    """Create what is missing in ``directory``; returns the names of the files it wrote."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    written = []
    passwords = {}
    for user in USERS + INFRA_USERS + SENTINEL_USERS:
        path = directory / password_file(user)
        if not path.exists():
            _write_new(path, secrets.token_hex(32) + "\n")
            written.append(path.name)
        passwords[user] = path.read_text().strip()
        if not passwords[user]:
            raise ValueError(f"{path} is empty: delete it to generate a new password")
    jwt = directory / JWT_FILE
    if not jwt.exists():
        _write_new(jwt, secrets.token_hex(32) + "\n")
        written.append(jwt.name)
    acl = directory / ACL_FILE
    rendered = render_acl(passwords, channel, php_channel)
    if not acl.exists() or acl.read_text() != rendered:
        _write_new(acl, rendered)
        written.append(acl.name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where the secrets live (default .secrets/)")
    parser.add_argument("--channel", default=os.environ.get("RPC_CHANNEL") or DEFAULT_CHANNEL, help="RPC_CHANNEL")
    parser.add_argument("--php-channel", default=DEFAULT_PHP_CHANNEL, help="base channel of the PHP seed peer")
    args = parser.parse_args(argv)
    try:
        written = ensure_secrets(args.dir, args.channel, args.php_channel)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"make_secrets: {exc}\n")
        return 1
    # Names only: secrets are never printed.
    sys.stdout.write(f"secrets in {args.dir}: " + (f"wrote {', '.join(written)}" if written else "up to date") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
