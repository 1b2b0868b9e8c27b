"""The Node.js bench pairs (bench/peers/, a bench-only npm package that ``make setup``
installs): the bare ioredis pair (``node``, the seed protocol with no framework) and the
frameworks users would pick instead of this library, NestJS's Redis transport and
Moleculer's Redis transporter, each an echo caller and responder driven and measured alike
(load.js), so the README's ratios can be against them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parent / "peers"

NEST = "NestJS: ClientProxy.send() -> @MessagePattern responder (Redis transport)"
MOLECULER = "Moleculer: broker.call() -> service action (Redis transporter)"


def _node(script: str) -> list[str]:
    if not (PEERS_DIR / "node_modules").is_dir():
        raise RuntimeError(f"{PEERS_DIR}/node_modules is missing: run `make setup` (npm ci there)")
    return ["node", str(PEERS_DIR / script)]


RESPONDERS: dict[str, Callable[[str, str], list[str]]] = {
    "node": lambda url, ch: [*_node("ioredis_responder.js"), url, ch],
    "nest": lambda url, ch: [*_node("nest_responder.js"), url, ch],
    "moleculer": lambda url, ch: [*_node("moleculer_responder.js"), url, ch],
}
CALLERS: dict[str, Callable[[str, str, int, float], list[str]]] = {
    "node": lambda url, ch, n, s: [*_node("ioredis_caller.js"), url, ch, str(n), str(s)],
    "nest": lambda url, ch, n, s: [*_node("nest_caller.js"), url, ch, str(n), str(s)],
    "moleculer": lambda url, ch, n, s: [*_node("moleculer_caller.js"), url, ch, str(n), str(s)],
}
# (name, caller, responder, in-flight levels or None for all), as bench.__main__.PAIRS.
PAIRS: list[tuple[str, str, str, list[int] | None]] = [
    (NEST, "nest", "nest", None),
    (MOLECULER, "moleculer", "moleculer", None),
]
# Ratio lines: ours against each, "Nx <label>".
RATIO_LABELS = {NEST: "NestJS's Redis transport", MOLECULER: "Moleculer's Redis transporter"}
