"""The operator console's tables on every backend: run output, job controls, run requests.

Each test runs against SQLite and against PostgreSQL (a private cluster), through the
``StateStore`` protocol only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from scheduler.output import RunOutput, cut_marker
from scheduler.stores.records import SCHEDULER_STREAM, OutputLine

UTC = UTC
SLOT = datetime(2026, 3, 1, 2, tzinfo=UTC)
DAY = date(2026, 2, 28)


def _line(seq: int, text: str, stream: str = "stdout") -> OutputLine:
    return OutputLine(seq, stream, text, datetime(2026, 3, 1, 2, 0, seq % 60, tzinfo=UTC))


def _finished_run(store: Any, job: str, slot: datetime) -> int:
    run_id = store.start_run(job, slot, slot.date(), "schedule")
    store.finish_run(run_id, "success")
    return int(run_id)


# --- run output ---------------------------------------------------------------------------------
def test_output_lines_are_written_read_in_order_and_paged(store: Any) -> None:
    run_id = store.start_run("j", SLOT, DAY, "schedule")
    store.write_output(run_id, [_line(1, "one"), _line(2, "two", "stderr")])
    store.write_output(run_id, [_line(3, "three")])
    lines = store.read_output(run_id)
    assert [(ln.seq, ln.stream, ln.line) for ln in lines] == [(1, "stdout", "one"), (2, "stderr", "two"),
                                                             (3, "stdout", "three")]
    assert lines[0].ts == datetime(2026, 3, 1, 2, 0, 1, tzinfo=UTC)
    assert [ln.line for ln in store.read_output(run_id, after=1, limit=1)] == ["two"]
    assert store.read_output(run_id + 1000) == []


def test_a_cut_deletes_a_range_and_a_marker_replaces_a_line_in_one_write(store: Any) -> None:
    run_id = store.start_run("j", SLOT, DAY, "schedule")
    store.write_output(run_id, [_line(i, f"l{i}") for i in range(1, 11)])
    store.write_output(run_id, [_line(3, "[cut]", SCHEDULER_STREAM), _line(11, "l11")], cut=(3, 7))
    assert [ln.line for ln in store.read_output(run_id)] == ["l1", "l2", "[cut]", "l8", "l9", "l10", "l11"]


def test_clear_output_forgets_one_run_only(store: Any) -> None:
    first = store.start_run("j", SLOT, DAY, "schedule")
    second = store.start_run("j", SLOT + timedelta(days=1), DAY + timedelta(days=1), "schedule")
    store.write_output(first, [_line(1, "a")])
    store.write_output(second, [_line(1, "b")])
    store.clear_output(first)
    assert store.read_output(first) == []
    assert [ln.line for ln in store.read_output(second)] == ["b"]


def test_prune_keeps_the_newest_runs_per_job_and_the_run_rows(store: Any) -> None:
    ids = {job: [] for job in ("a", "b")}
    for job in ids:
        for day in range(4):
            run_id = _finished_run(store, job, SLOT + timedelta(days=day))
            store.write_output(run_id, [_line(1, f"{job}{day}")])
            ids[job].append(run_id)
    running = store.start_run("a", SLOT + timedelta(days=10), DAY + timedelta(days=10), "schedule")
    store.write_output(running, [_line(1, "live")])
    assert store.prune_output(keep_runs=2, keep_days=None) == 4
    for job in ids:
        assert [bool(store.read_output(i)) for i in ids[job]] == [False, False, True, True]
    assert store.read_output(running), "a running run's output is never pruned"
    assert len(store.history(None, 100)) == 9, "run rows stay"


def test_prune_by_age_uses_the_end_of_the_run(store: Any) -> None:
    run_id = _finished_run(store, "j", SLOT)
    store.write_output(run_id, [_line(1, "x")])
    ended = store.get_run(run_id).ended_at
    assert store.prune_output(keep_runs=None, keep_days=1, now=ended + timedelta(hours=23)) == 0
    assert store.read_output(run_id)
    assert store.prune_output(keep_runs=None, keep_days=1, now=ended + timedelta(hours=25)) == 1
    assert store.read_output(run_id) == []


def test_run_output_buffer_keeps_head_and_tail_with_a_marker(store: Any) -> None:
    run_id = store.start_run("j", SLOT, DAY, "schedule")
    output = RunOutput.open(store, run_id, lambda text: text.replace("hunter22", "***"), max_bytes=200)
    for i in range(100):
        output.add(f"line {i:03d} hunter22", "stdout")  # 13 bytes with the newline once masked
    output.close()
    lines = store.read_output(run_id)
    texts = [ln.line for ln in lines]
    kept = 7 + 7  # 100 bytes of head, 100 of tail: seven 13-byte lines each
    assert texts[:7] == [f"line {i:03d} ***" for i in range(7)]
    assert texts[-7:] == [f"line {i:03d} ***" for i in range(93, 100)]
    assert texts[7] == cut_marker(100 - kept, (100 - kept) * 13)
    assert texts[7] == "[... 86 lines (1.1 KiB) cut ...]"
    assert lines[7].stream == SCHEDULER_STREAM and len(lines) == kept + 1
    assert not any("hunter22" in t for t in texts)
    assert [ln.seq for ln in lines] == sorted(ln.seq for ln in lines)


def test_run_output_is_readable_while_the_run_goes_on(store: Any, open_store: Callable[[], Any]) -> None:
    run_id = store.start_run("j", SLOT, DAY, "schedule")
    output = RunOutput.open(store, run_id, lambda text: text, max_bytes=1 << 20)
    reader = open_store()  # another process or replica reading the same database
    try:
        output.add("first", "stdout")
        deadline = time.monotonic() + 20  # the writer thread flushes every 0.25 s
        while not reader.read_output(run_id) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [ln.line for ln in reader.read_output(run_id)] == ["first"]
    finally:
        output.close()


# --- job controls -------------------------------------------------------------------------------
def test_pause_and_resume_move_the_control_version_only_on_a_change(store: Any) -> None:
    start = store.control_version()
    assert store.job_controls() == {}
    assert store.set_paused("j", False, None, "cli") is False  # never paused: nothing to resume
    assert store.set_paused("j", True, "maintenance", "cli") is True
    after_pause = store.control_version()
    assert after_pause > start
    assert store.set_paused("j", True, "again", "cli") is False
    assert store.control_version() == after_pause
    control = store.job_controls()["j"]
    assert (control.paused, control.reason, control.changed_by, control.run_id) == (True, "maintenance", "cli", None)
    assert store.set_paused("j", False, None, "cli") is True
    assert store.control_version() > after_pause
    assert store.job_controls()["j"].paused is False


def test_an_automatic_pause_names_its_run(store: Any) -> None:
    store.set_paused("j", True, "3 failed runs in a row", "pause_after_failures", run_id=42)
    control = store.job_controls()["j"]
    assert (control.changed_by, control.run_id) == ("pause_after_failures", 42)
    assert control.as_json()["paused"] is True


def test_racing_pauses_report_one_change(store: Any, open_store: Callable[[], Any]) -> None:
    stores = [open_store() for _ in range(4)]
    results: list[bool] = []
    barrier = threading.Barrier(len(stores))

    def pause(s: Any) -> None:
        barrier.wait()
        results.append(s.set_paused("j", True, "race", "cli"))

    threads = [threading.Thread(target=pause, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]


# --- run requests -------------------------------------------------------------------------------
def test_a_request_is_claimed_once_with_its_slot(store: Any, open_store: Callable[[], Any]) -> None:
    version = store.control_version()
    first = store.request_trigger("j", None, "request")
    second = store.request_trigger("j", DAY, "request")
    assert store.control_version() > version
    slots = {None: SLOT + timedelta(days=1), DAY: SLOT}
    [a, b] = store.claim_triggers("replica-a", lambda job, day: slots[day])
    assert (a.id, a.logical_date, a.slot, a.claimed_by) == (first, None, SLOT + timedelta(days=1), "replica-a")
    assert (b.id, b.logical_date, b.slot) == (second, DAY, SLOT)
    assert open_store().claim_triggers("replica-b", lambda job, day: SLOT) == []
    assert store.get_trigger(first).claimed_by == "replica-a"
    assert store.cancel_trigger(first) is False


def test_a_request_for_an_unknown_job_stays_queued_and_can_be_withdrawn(store: Any) -> None:
    request_id = store.request_trigger("elsewhere", None, "request")
    assert store.claim_triggers("replica-a", lambda job, day: None) == []
    assert store.get_trigger(request_id).claimed_by is None
    assert store.cancel_trigger(request_id) is True
    assert store.get_trigger(request_id) is None


def test_concurrent_claimers_split_the_queue_without_duplicates(store: Any, open_store: Callable[[], Any]) -> None:
    ids = {store.request_trigger(f"j{i}", None, "request") for i in range(30)}
    claimers = [open_store() for _ in range(3)]
    got: list[list[int]] = [[] for _ in claimers]
    barrier = threading.Barrier(len(claimers))

    def claim(index: int) -> None:
        barrier.wait()
        for _ in range(5):
            got[index].extend(r.id for r in claimers[index].claim_triggers(f"r{index}", lambda job, day: SLOT))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(claimers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [i for ids_ in got for i in ids_]
    assert sorted(flat) == sorted(ids)
