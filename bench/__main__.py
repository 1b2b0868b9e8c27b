"""``make bench``: throughput and latency of the library, the gateway and fan-out, beside
Node.js and plain redis-py on the same Redis, each component in its own process.

Every figure is the median of several runs with min-max; ratios are computed within this
run only, since the machine is shared. ``--quick`` is CI's smoke mode: it proves the bench
runs and asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from scripts.redis_cluster import ClusterProcesses
from scripts.redis_process import RedisProcess, free_port

from . import peer_pairs
from .stats import cpu_seconds, rss_mib
from .wsclient import gateway_env

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'services'}:{ROOT}", "LOG_LEVEL": "WARNING"}


@dataclasses.dataclass
class Config:
    inflight: list[int]
    runs: int
    seconds: float
    fanout_clients: list[int]
    fanout_events: int
    fanout_offered: int
    memory_calls: int
    ws_clients: int
    ws_window: int


FULL = Config([1, 16, 128, 1024], 3, 2.0, [100, 1000], 200, 60_000, 10_000_000, 16, 16)
QUICK = Config([1, 128], 1, 0.5, [100], 20, 20_000, 20_000, 4, 8)


class Server:
    """A long-running peer (responder, gateway) in its own process."""

    def __init__(self, argv: list[str], ready: str | None = "ready", env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env or ENV, cwd=ROOT)
        if ready is not None:
            line = self.process.stdout.readline() if self.process.stdout else ""
            if ready not in line:
                raise RuntimeError(f"{argv[:3]} did not start: {line!r}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


Meters = dict[str, Callable[[], float]]


def run_load(argv: list[str], timeout: float = 120, meters: Meters | None = None) -> dict[str, Any]:
    """Run a load generator and return its JSON result line, plus the change of each meter
    (``responder_cpu``: a callable read now) over the generator's measured window: between
    its ``measuring`` and ``measured`` lines, so warm-up and start-up are not charged to
    the calls; over the whole run for a generator that prints no such lines."""
    meters = meters or {}
    start = {key: read() for key, read in meters.items()}
    with tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True, env=ENV, cwd=ROOT)
        killer = threading.Timer(timeout, process.kill)
        killer.start()
        lines, end = [], None
        try:
            assert process.stdout is not None
            for line in process.stdout:
                if line.strip() == "measuring":
                    start = {key: read() for key, read in meters.items()}
                elif line.strip() == "measured":
                    end = {key: read() for key, read in meters.items()}
                elif line.startswith("{"):
                    lines.append(line)
            returncode = process.wait()
        finally:
            killer.cancel()
        if end is None:
            end = {key: read() for key, read in meters.items()}
        stderr.seek(0)
        if returncode != 0 or not lines:
            raise RuntimeError(f"{argv[:4]} failed ({returncode}): {stderr.read()[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    result.update({key: end[key] - start[key] for key in meters})
    return result


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def redis_cpu_of(clients: list[redis.Redis]) -> Callable[[], float]:
    """A meter: the CPU seconds of these Redis servers so far."""
    return lambda: sum(redis_cpu(client) for client in clients)


def cpu_of(servers: list[Server]) -> Callable[[], float]:
    """A meter: the CPU seconds of these processes so far."""
    return lambda: sum(server.cpu() for server in servers)


def channel() -> str:
    return f"bench_{uuid.uuid4().hex[:8]}"


# -- scenarios --------------------------------------------------------------------------

RESPONDERS = {
    "library": lambda url, ch: [PY, "-m", "bench.library_responder", url, ch],
    "redis-py": lambda url, ch: [PY, "-m", "bench.redispy_pair", "responder", url, ch],
    **peer_pairs.RESPONDERS,
}
CALLERS = {
    "library": lambda url, ch, n, s: [PY, "-m", "bench.library_caller", url, ch, str(n), str(s)],
    "library-seed": lambda url, ch, n, s: [PY, "-m", "bench.library_caller", url, ch, str(n), str(s), "--shared-replies"],
    "redis-py": lambda url, ch, n, s: [PY, "-m", "bench.redispy_pair", "caller", url, ch, str(n), str(s)],
    **peer_pairs.CALLERS,
}
PAIRS = [
    # (name, caller, responder, in-flight levels or None for all)
    ("ours: library caller -> library responder", "library", "library", None),
    ("node: ioredis caller -> ioredis responder (bare)", "node", "node", None),
    ("node caller (seed protocol) -> library responder", "node", "library", None),
    ("library caller (seed protocol) -> node responder", "library-seed", "node", None),
    ("plain redis-py caller -> redis-py responder", "redis-py", "redis-py", [1, 16, 128]),
    *peer_pairs.PAIRS,  # NestJS and Moleculer on Redis
]


def rpc_pairs(url: str, cfg: Config, client: redis.Redis) -> list[dict[str, Any]]:
    """Every pair at each in-flight level, interleaved run by run (pair A, B, C, then A, B,
    C again), so the shared machine's drift hits every pair of a level alike."""
    rows = []
    for inflight in cfg.inflight:
        pairs = [(name, caller, responder) for name, caller, responder, levels in PAIRS if levels is None or inflight in levels]
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in pairs}
        for _ in range(cfg.runs):
            for name, caller, responder in pairs:
                runs[name].append(pair_run(url, client, caller, responder, inflight, cfg.seconds))
        for name, _, _ in pairs:
            rows.append(summarise_runs(name, inflight, runs[name]))
            report_row(rows[-1])
    return rows


def pair_run(url: str, client: redis.Redis, caller: str, responder: str, inflight: int, seconds: float) -> dict[str, Any]:
    ch = channel()
    server = Server(RESPONDERS[responder](url, ch))
    try:
        meters = {"responder_cpu": server.cpu, "redis_cpu": redis_cpu_of([client])}
        return run_load(CALLERS[caller](url, ch, inflight, seconds), meters=meters)
    finally:
        server.stop()


def metrics_cost(url: str, cfg: Config, client: redis.Redis, inflight: int = 128) -> list[dict[str, Any]]:
    """The library pair with metrics off, then on (counted, as in every other row, and here
    also served on /metrics and scraped every 2 s, harsher than Prometheus's usual 15 s), interleaved run by run so the shared
    machine's drift hits both alike; the cost is the drop of the median rate."""
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for _ in range(2 * cfg.runs + 1):  # more runs than the other rows: the effect is a few per cent
        for mode in ("off", "on"):
            ch = channel()
            ports = [free_port(), free_port()] if mode == "on" else []
            off = ["--no-metrics"] if mode == "off" else []
            server = Server(RESPONDERS["library"](url, ch) + [str(p) for p in ports[:1]] + off)
            argv = CALLERS["library"](url, ch, inflight, cfg.seconds) + [f"--metrics-port={p}" for p in ports[1:]] + off
            scraper = Scraper([f"http://127.0.0.1:{p}/metrics" for p in ports])
            try:
                scraper.start()
                result = run_load(argv, meters={"responder_cpu": server.cpu, "redis_cpu": redis_cpu_of([client])})
            finally:
                scraper.stop()
                server.stop()
            result["scrapes"] = scraper.count
            if mode == "on" and scraper.count < 2:
                raise RuntimeError(f"metrics were scraped {scraper.count} times: {scraper.errors[-1:]}")
            runs[mode].append(result)
    rows = []
    for mode in ("off", "on"):
        rows.append(summarise_runs(f"metrics {mode}: library caller -> library responder", inflight, runs[mode]))
        report_row(rows[-1])
    off, on = rows[0]["rate"]["median"], rows[1]["rate"]["median"]
    cost = (off - on) / off * 100
    # CPU per call (caller + responder processes) is steadier than calls/s on a shared machine.
    cpu_off, cpu_on = (
        statistics.median((r["cpu"] + r["responder_cpu"]) / r["count"] * 1e6 for r in runs[mode]) for mode in ("off", "on")
    )
    rows[1]["metrics_cost_percent"] = round(cost, 2)
    rows[1]["metrics_cpu_us_per_call"] = [round(cpu_off, 2), round(cpu_on, 2)]
    print(
        f"metrics cost at {inflight} in flight: {off:,.0f} -> {on:,.0f} calls/s ({cost:+.1f} %; budget 5 %); "
        f"CPU per call (caller + responder) {cpu_off:.2f} -> {cpu_on:.2f} us ({(cpu_on - cpu_off) / cpu_off * 100:+.1f} %)",
        flush=True,
    )
    return rows


SCALE_OUT_MODES = {
    # mode -> (responder processes, streams?)
    "one responder (pub/sub)": (1, False),
    "3 responder replicas (pub/sub, claims)": (3, False),
    "one responder (streams)": (1, True),
    "3 responder replicas (streams)": (3, True),
}


def scale_out(url: str, cfg: Config, client: redis.Redis, inflight: int = 128) -> list[dict[str, Any]]:
    """The library pair with one responder, then 3 replicas (which claim each request so
    one runs it), then Streams mode, interleaved run by run like the metrics rows. CPU per
    call sums the caller and every responder process."""
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in SCALE_OUT_MODES}
    for _ in range(cfg.runs):
        for mode, (replicas, streams) in SCALE_OUT_MODES.items():
            ch = channel()
            flag = ["--streams"] if streams else []
            servers = [Server(RESPONDERS["library"](url, ch) + flag) for _ in range(replicas)]
            try:
                meters = {
                    "responder_cpu": cpu_of(servers),
                    "redis_cpu": redis_cpu_of([client]),
                }
                result = run_load(CALLERS["library"](url, ch, inflight, cfg.seconds) + flag, meters=meters)
            finally:
                for server in servers:
                    server.stop()
            runs[mode].append(result)
    rows = []
    for mode in SCALE_OUT_MODES:
        row = summarise_runs(f"scale-out: {mode}", inflight, runs[mode])
        report_row(row)
        rows.append(row)
    return rows


class Scraper:
    """GETs each /metrics URL every 2 s on a thread, as Prometheus would (but more often)."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.count = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        if self.urls:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        scraped: set[str] = set()
        # Every 0.3 s until each endpoint answered once (a process may still be starting),
        # then every 2 s.
        while not self._stop.wait(2.0 if len(scraped) == len(self.urls) else 0.3):
            for url in self.urls:
                try:
                    with urllib.request.urlopen(url, timeout=2) as response:
                        response.read()
                    self.count += 1
                    scraped.add(url)
                except OSError as exc:
                    self.errors.append(f"{url}: {exc}")


GATEWAY_BASELINE = "gateway baseline: library caller -> library responder (interleaved)"


def gateway_path(url: str, cfg: Config, client: redis.Redis, inflight: int = 128) -> list[dict[str, Any]]:
    """N WebSockets through the gateway, each run after a run of the library pair at 128 in
    flight (the baseline row), so the ratio compares runs the machine's drift hit alike."""
    runs, baseline = [], []
    for _ in range(cfg.runs):
        baseline.append(pair_run(url, client, "library", "library", inflight, cfg.seconds))
        ch = channel()
        responder = Server(RESPONDERS["library"](url, ch))
        gateway, ws_url = start_gateway(url, ch)
        try:
            meters = {"gateway_cpu": gateway.cpu, "responder_cpu": responder.cpu, "redis_cpu": redis_cpu_of([client])}
            argv = [PY, "-m", "bench.ws_load", ws_url, str(cfg.ws_clients), str(cfg.ws_window), str(cfg.seconds)]
            result = run_load(argv, meters=meters)
        finally:
            gateway.stop()
            responder.stop()
        runs.append(result)
    base = summarise_runs(GATEWAY_BASELINE, inflight, baseline)
    report_row(base)
    row = summarise_runs(
        f"gateway: {cfg.ws_clients} WebSockets x {cfg.ws_window} in flight -> library responder",
        cfg.ws_clients * cfg.ws_window,
        runs,
    )
    report_row(row)
    return [base, row]


def start_gateway(url: str, ch: str) -> tuple[Server, str]:
    port = free_port()
    env = {
        **ENV,
        "REDIS_URL": url,
        "RPC_CHANNEL": ch,
        "GATEWAY_PORT": str(port),
        "GATEWAY_SEND_BUFFER": "16777216",
        "GATEWAY_MAX_CALLS_PER_CLIENT": "1024",
        **gateway_env(),  # the bench's token secret; rate and connection limits out of the way
    }
    gateway = Server([PY, "-m", "ws_gateway"], ready=None, env=env)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                gateway.stop()
                raise RuntimeError("gateway not ready") from None
            time.sleep(0.05)
    return gateway, f"ws://127.0.0.1:{port}/ws"


def fanout(url: str, cfg: Config, client: redis.Redis) -> list[dict[str, Any]]:
    rows = []
    for clients in cfg.fanout_clients:
        runs = []
        for _ in range(cfg.runs):
            ch = channel()
            gateway, ws_url = start_gateway(url, ch)
            try:
                argv = [PY, "-m", "bench.fanout", ws_url, url, ch, str(clients), str(cfg.fanout_events), str(cfg.fanout_offered)]
                result = run_load(argv, meters={"gateway_cpu": gateway.cpu, "redis_cpu": redis_cpu_of([client])})
            finally:
                gateway.stop()
            runs.append(result)
        name = f"fan-out: one push -> {clients} WebSockets, {cfg.fanout_offered:,} offered/s"
        row = summarise_runs(name, clients, runs, unit="deliveries/s")
        report_row(row)
        rows.append(row)
    return rows


def memory(url: str, cfg: Config) -> dict[str, Any]:
    """A fixed number of calls at 128 in flight, recording no latencies, with each side's
    RSS sampled every second: flat means the last samples are where the first ones were."""
    ch = channel()
    server = Server(RESPONDERS["library"](url, ch))
    samples: list[float] = []
    sampler = threading.Thread(target=_sample_rss, args=(server.pid, samples, stop := threading.Event()), daemon=True)
    try:
        sampler.start()
        argv = [PY, "-m", "bench.library_caller", url, ch, "128", "0", "--calls", str(cfg.memory_calls)]
        result = run_load(argv, timeout=60 + cfg.memory_calls / 20_000)
    finally:
        stop.set()
        sampler.join(timeout=5)
        server.stop()
    caller_samples = result["rss_samples"] or [result["rss_before"], result["rss_after"]]
    responder_samples = samples or [float("nan")]
    row = {
        "calls": result["count"],
        "errors": result["errors"],
        "seconds": round(result["seconds"], 1),
        "caller_rss_mib": [round(caller_samples[0], 1), round(caller_samples[-1], 1), round(max(caller_samples), 1)],
        "responder_rss_mib": [round(responder_samples[0], 1), round(responder_samples[-1], 1), round(max(responder_samples), 1)],
    }
    print(
        f"memory over {row['calls']:,} calls ({row['seconds']} s): caller RSS {row['caller_rss_mib'][0]} -> "
        f"{row['caller_rss_mib'][1]} MiB (max {row['caller_rss_mib'][2]}), responder RSS {row['responder_rss_mib'][0]} -> "
        f"{row['responder_rss_mib'][1]} MiB (max {row['responder_rss_mib'][2]}), errors {row['errors']}"
    )
    return row


def _sample_rss(pid: int, samples: list[float], stop: threading.Event) -> None:
    while not stop.wait(1.0):
        try:
            samples.append(rss_mib(pid))
        except OSError:
            return


# -- reporting --------------------------------------------------------------------------


CLUSTER_LEVELS = (16, 128)


def cluster_rows(url: str, cfg: Config, client: redis.Redis) -> list[dict[str, Any]]:
    """The library pair on single Redis and on a three-master Redis Cluster (cluster mode:
    sharded pub/sub), interleaved run by run on the same machine. Every process shares the
    same cores, so this measures the cluster mode's overhead, not a cluster's gain: a real
    cluster puts each master on cores of its own (docs/operations.md, the capacity estimate)."""
    rows = []
    with ClusterProcesses() as cluster:
        nodes = [redis.Redis(port=node.port) for node in cluster.nodes]
        modes = {
            "cluster: library pair, single Redis (same run)": (url, [client], []),
            "cluster: library pair, 3-master Redis Cluster, sharded pub/sub": (cluster.url, nodes, ["--cluster"]),
        }
        for inflight in [n for n in cfg.inflight if n in CLUSTER_LEVELS] or [cfg.inflight[-1]]:
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in modes}
            for _ in range(cfg.runs):
                for name, (seed, servers, flag) in modes.items():
                    ch = channel()
                    server = Server([*RESPONDERS["library"](seed, ch), *flag])
                    try:
                        meters = {
                            "responder_cpu": server.cpu,
                            "redis_cpu": redis_cpu_of(servers),
                        }
                        result = run_load([*CALLERS["library"](seed, ch, inflight, cfg.seconds), *flag], meters=meters)
                    finally:
                        server.stop()
                    runs[name].append(result)
            for name in modes:
                row = summarise_runs(name, inflight, runs[name])
                rows.append(row)
                report_row(row)
        for node in nodes:
            node.close()
    return rows


def summarise_runs(name: str, inflight: int, runs: list[dict[str, Any]], unit: str = "calls/s") -> dict[str, Any]:
    def agg(key: str) -> dict[str, float] | None:
        values = [r[key] for r in runs if key in r]
        if not values:
            return None
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    keys = ["rate", "p50", "p90", "p99", "max", "cpu", "responder_cpu", "redis_cpu", "gateway_cpu", "loadgen_cpu"]
    row = {"scenario": name, "inflight": inflight, "unit": unit, "runs": runs}
    row.update({k: v for k in keys if (v := agg(k)) is not None})
    row["errors"] = sum(r.get("errors", 0) for r in runs)
    row["cpu_us"] = cpu_per_call(runs)
    return row


# CPU seconds a run reports, by the part of the system they are (the load generators that
# stand in for browsers, ``loadgen_cpu``, are reported apart: they are not the system).
CPU_PARTS = (("cpu", "caller"), ("gateway_cpu", "gateway"), ("responder_cpu", "responder"), ("redis_cpu", "redis"))


def cpu_per_call(runs: list[dict[str, Any]]) -> dict[str, float]:
    """CPU microseconds per call (or delivery) of each part, medians over the runs, and
    their ``total``; ``loadgen`` beside them. Steadier than calls/s on a shared machine."""
    parts: dict[str, float] = {}
    for key, part in (*CPU_PARTS, ("loadgen_cpu", "loadgen")):
        values = [r[key] / r["count"] * 1e6 for r in runs if key in r and r.get("count")]
        if values:
            parts[part] = round(statistics.median(values), 1)
    if parts:
        parts["total"] = round(sum(v for part, v in parts.items() if part != "loadgen"), 1)
    return parts


def cpu_cell(row: dict[str, Any]) -> str:
    """``14.3 (caller 7.1, responder 4.4, redis 2.8)``: the total, then each part."""
    cpu = row.get("cpu_us") or {}
    if "total" not in cpu:
        return "-"
    parts = ", ".join(f"{part} {value}" for part, value in cpu.items() if part != "total")
    return f"{cpu['total']} ({parts})"


def report_row(row: dict[str, Any]) -> None:
    rate = row["rate"]
    cpu = " ".join(
        f"{k.replace('_cpu', '')}={row[k]['median']:.2f}s"
        for k in ("cpu", "responder_cpu", "gateway_cpu", "redis_cpu", "loadgen_cpu")
        if k in row
    )
    print(
        f"{row['scenario'][:60]:<60} {row['inflight']:>5}  {rate['median']:>9,.0f} {row['unit']} "
        f"({rate['min']:,.0f}-{rate['max']:,.0f})  p50 {row['p50']['median']:.2f}  p99 {row['p99']['median']:.2f}  "
        f"max {row['max']['median']:.1f} ms  err {row['errors']}  cpu {cpu}  us/call {cpu_cell(row)}",
        flush=True,
    )


def ratios(rows: list[dict[str, Any]]) -> list[str]:
    by = {(r["scenario"], r["inflight"]): r["rate"]["median"] for r in rows}
    ours, node, plain = PAIRS[0][0], PAIRS[1][0], PAIRS[4][0]
    out = [
        f"metrics on cost {row['metrics_cost_percent']:+.1f} % of the library pair's calls/s at {row['inflight']} in flight "
        f"(budget 5 %); CPU per call {row['metrics_cpu_us_per_call'][0]} -> {row['metrics_cpu_us_per_call'][1]} us"
        for row in rows
        if "metrics_cost_percent" in row
    ]
    scale = {r["scenario"]: r for r in rows if r["scenario"].startswith("scale-out: ")}
    if scale:
        base = scale[f"scale-out: {next(iter(SCALE_OUT_MODES))}"]
        for name, row in scale.items():
            out.append(
                f"{name[len('scale-out: ') :]}: {row['rate']['median'] / base['rate']['median']:.2f}x one pub/sub responder's "
                f"calls/s at {row['inflight']} in flight; CPU per call (caller + responders + Redis) {row['cpu_us']['total']} us"
            )
    cluster = [r for r in rows if r["scenario"].startswith("cluster:")]
    for single, sharded in zip(cluster[::2], cluster[1::2], strict=False):
        out.append(
            f"cluster mode at {sharded['inflight']} in flight: {sharded['rate']['median'] / single['rate']['median']:.2f}x "
            f"single Redis's calls/s on these shared cores (overhead, not gain); CPU us per call "
            f"single {single['cpu_us']}, cluster {sharded['cpu_us']}"
        )
    for row in rows:
        if row["scenario"].startswith("gateway: ") and (GATEWAY_BASELINE, 128) in by:
            ratio = row["rate"]["median"] / by[(GATEWAY_BASELINE, 128)]
            out.append(
                f"gateway ({row['inflight']} in flight over WebSockets): {ratio:.2f}x "
                f"the library path's calls/s at 128 in flight, interleaved (target 0.75); CPU us per call {row['cpu_us']}"
            )
    for (name, inflight), rate in sorted(by.items(), key=lambda kv: kv[0][1]):
        if name != ours:
            continue
        parts = [f"{inflight:>5} in flight: ours {rate:,.0f}/s"]
        if (node, inflight) in by:
            parts.append(f"{rate / by[(node, inflight)]:.2f}x the bare Node.js pair")
        if (plain, inflight) in by:
            parts.append(f"{rate / by[(plain, inflight)]:.2f}x plain redis-py")
        for peer, label in peer_pairs.RATIO_LABELS.items():
            if (peer, inflight) in by:
                parts.append(f"{rate / by[(peer, inflight)]:.2f}x {label}")
        out.append(", ".join(parts))
    return out


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Measured {m['date']} on {m['cores']} cores ({m['cpu']}), Python {m['python']}, Redis {m['redis']}, "
        f"Node.js {m['node']}; {report['config']['runs']} runs of {report['config']['seconds']:g} s each, "
        "medians with min-max. Caller, responder and Redis each in its own process on the same 2 cores.",
        "",
        "| scenario | in flight | rate | p50 ms | p99 ms | max ms | errors | CPU µs per call (parts) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in report["rows"]:
        rate = row["rate"]
        lines.append(
            f"| {row['scenario']} | {row['inflight']:,} | {rate['median']:,.0f} {row['unit']} "
            f"({rate['min']:,.0f}-{rate['max']:,.0f}) | {row['p50']['median']:.2f} | {row['p99']['median']:.2f} "
            f"| {row['max']['median']:.1f} | {row['errors']} | {cpu_cell(row)} |"
        )
    if "memory" in report:
        mem = report["memory"]
        lines += [
            "",
            f"Memory over {mem['calls']:,} calls at 128 in flight ({mem['seconds']} s, RSS sampled every second): "
            f"caller RSS {mem['caller_rss_mib'][0]} -> {mem['caller_rss_mib'][1]} MiB (max {mem['caller_rss_mib'][2]}), "
            f"responder RSS {mem['responder_rss_mib'][0]} -> {mem['responder_rss_mib'][1]} MiB "
            f"(max {mem['responder_rss_mib'][2]}), {mem['errors']} errors.",
        ]
    lines += ["", "Ratios within this run:", ""] + [f"- {line.strip()}" for line in report["ratios"]]
    return "\n".join(lines) + "\n"


def machine(client: redis.Redis) -> dict[str, Any]:
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip() if shutil.which("node") else None
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?"),
        "python": platform.python_version(),
        "redis": client.info("server")["redis_version"],
        "node": node,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke mode for CI (under a minute)")
    parser.add_argument("--only", choices=["rpc", "metrics", "scale", "gateway", "fanout", "memory", "cluster"], action="append")
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    wanted = set(args.only or ["rpc", "metrics", "scale", "gateway", "fanout", "memory", "cluster"])
    started = time.monotonic()
    with RedisProcess() as server:
        client = redis.Redis.from_url(server.url)
        report: dict[str, Any] = {
            "machine": machine(client),
            "mode": "quick" if args.quick else "full",
            "config": dataclasses.asdict(cfg),
        }
        print(f"machine: {report['machine']}")
        rows: list[dict[str, Any]] = []
        if "rpc" in wanted:
            rows += rpc_pairs(server.url, cfg, client)
        if "metrics" in wanted:
            rows += metrics_cost(server.url, cfg, client)
        if "scale" in wanted:
            rows += scale_out(server.url, cfg, client)
        if "gateway" in wanted:
            rows += gateway_path(server.url, cfg, client)
        if "fanout" in wanted:
            rows += fanout(server.url, cfg, client)
        if "memory" in wanted:
            report["memory"] = memory(server.url, cfg)
        if "cluster" in wanted:
            rows += cluster_rows(server.url, cfg, client)
        report["rows"] = rows
        report["ratios"] = ratios(rows)
        client.close()
    print("\nratios within this run:")
    for line in report["ratios"]:
        print("  " + line)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"bench-{report['mode']}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(markdown(report))
    print(f"\n{time.monotonic() - started:.0f}s; results in {out.relative_to(ROOT)} and .md beside it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
