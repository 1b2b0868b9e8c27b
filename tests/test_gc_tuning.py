"""The services' collector settings (pubsub_rpc.lifecycle.tune_gc, applied by lifecycle.run
and the gateway): start-up objects frozen, young collections rarer; cycles made afterwards
are still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from pubsub_rpc.lifecycle import GC_THRESHOLDS, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_tune_gc_freezes_start_up_objects_and_still_collects_later_cycles(restored_gc: None) -> None:
    tune_gc()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 1000  # the imports' objects
    a, b = Node(), Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.collect()
    assert gone() is None
