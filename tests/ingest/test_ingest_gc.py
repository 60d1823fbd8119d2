"""A run's collector settings: changed while it lasts, restored after, a fork server's freeze kept."""

from __future__ import annotations

import gc

import pytest

from scheduler.kinds.ingest.pipeline import GC_THRESHOLDS, _frozen_heap


def test_the_heap_is_frozen_during_a_run_and_handed_back_after() -> None:
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError), _frozen_heap():
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0
        raise RuntimeError("the run failed")  # a failing run restores them too
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_a_heap_frozen_before_the_run_stays_frozen() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with _frozen_heap():
            pass
        assert gc.get_freeze_count() >= frozen
    finally:
        gc.unfreeze()
