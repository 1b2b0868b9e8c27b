"""Executions counted where they cannot lie: every replica's own log.

The responder's `work` action (services/laravel_like_responder/actions.py) logs
``work started tag=<tag> replica=<host>`` before it sleeps and ``work done ...`` after, so a
run is on record even when its replica is SIGKILLed a moment later (``docker logs`` still
reads a dead container's output). A tag names one call of the load, whatever path it took
(host caller or browser through a gateway), so runs are counted per call.
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from .chaos_stack import docker

WORK_LOGGER = "laravel_like_responder.work"
RUN_LINE = re.compile(r"work (started|done) tag=(\S*) replica=(\S+)")


@dataclass
class Runs:
    """tag -> the replicas (host names) that started / finished it, in log order."""

    started: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    done: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    replica_of: dict[str, str] = field(default_factory=dict)  # container id -> host name
    # (tag, replica) -> Unix time of that replica's first start of the tag (its log line's ts)
    started_at: dict[tuple[str, str], float] = field(default_factory=dict)

    def started_twice(self) -> dict[str, list[str]]:
        return {tag: replicas for tag, replicas in self.started.items() if len(replicas) > 1}

    def done_twice(self) -> dict[str, list[str]]:
        return {tag: replicas for tag, replicas in self.done.items() if len(replicas) > 1}

    def unfinished_on(self, replica: str) -> list[str]:
        """Tags ``replica`` started and never finished (in flight when it died or froze)."""
        return [tag for tag, replicas in self.started.items() if replicas.count(replica) > self.done.get(tag, []).count(replica)]

    def per_replica(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for replicas in self.done.values():
            for replica in replicas:
                counts[replica] += 1
        return dict(counts)


def read_runs(containers: list[str], prefix: str, since: float) -> Runs:
    """The runs of tags starting with ``prefix`` logged since the Unix time ``since``."""
    runs = Runs()
    for cid in containers:
        runs.replica_of[cid] = docker("inspect", "-f", "{{.Config.Hostname}}", cid).strip()
        output = docker("logs", "--since", f"{since - 1:.3f}", cid, timeout=120)
        for line in output.splitlines():
            if WORK_LOGGER not in line:
                continue
            record = json.loads(line)
            match = RUN_LINE.search(record["msg"])
            if match and match[2].startswith(prefix):
                what, tag, replica = match.groups()
                (runs.started if what == "started" else runs.done)[tag].append(replica)
                if what == "started":
                    runs.started_at.setdefault((tag, replica), _unix(record["ts"]))
    return runs


def _unix(ts: str) -> float:
    """The logs' UTC timestamps (2026-12-02T12:40:17.179Z) as Unix time."""
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def settled_runs(containers: list[str], live: list[str], prefix: str, since: float, timeout: float = 20) -> Runs:
    """``read_runs`` once every run on a ``live`` container has finished (bounded wait: a
    replica that was frozen may still be finishing what it had started)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = read_runs(containers, prefix, since)
        hosts = [runs.replica_of[cid] for cid in live]
        if not any(runs.unfinished_on(host) for host in hosts) or time.monotonic() > deadline:
            return runs
        time.sleep(0.25)
