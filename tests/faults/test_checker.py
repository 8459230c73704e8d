"""The checker itself: a clean run passes, and each broken guarantee is caught (a checker that cannot
fail proves nothing)."""

from __future__ import annotations

from etcdcron.testing import Line, Record, Scenario, check

T = 1_000


def _ok(job="j", slot=T, node="n1", fence=10, attempt=1, at=None):
    at = slot + 0.01 if at is None else at
    return [Line("start", job, slot, node, fence, attempt, at), Line("end", job, slot, node, fence, attempt, at + 0.1)]


def _rec(job="j", slot=T, state="succeeded", node="n1", fence=10, attempt=1):
    return Record(job, slot, state, node, fence, attempt)


def _sc(**kw):
    kw.setdefault("due", {("j", T)})
    kw.setdefault("must_run", set(kw["due"]))
    return Scenario(**kw)


def _only(violations, kind):
    """The violations name ``kind`` (one fault may break a second guarantee too)."""
    assert any(v.startswith(kind) for v in violations), violations


def test_clean_run_passes():
    """One run per firing, on time, completed and recorded: no violation."""
    ledger = _ok() + _ok(slot=T + 1, fence=12, node="n2")
    recs = [_rec(), _rec(slot=T + 1, fence=12, node="n2")]
    assert check(ledger, recs, _sc(due={("j", T), ("j", T + 1)})) == []


def test_recovered_crash_passes():
    """A run lost with a killed node and rerun with attempt 2 and a higher fence is correct."""
    ledger = [Line("start", "j", T, "n1", 10, 1, T + 0.1)] + _ok(node="n2", fence=20, attempt=2, at=T + 4)
    assert check(ledger, [_rec(node="n2", fence=20, attempt=2)], _sc(disturbed={"n1"})) == []


def test_two_runs_under_one_claim_are_caught():
    """Two nodes running one firing under the same fence break one-winner."""
    ledger = _ok() + _ok(node="n2")
    _only(check(ledger, [_rec()], _sc(disturbed={"n1"})), "one-winner")


def test_rerun_of_an_undisturbed_run_is_caught():
    """A second run while the first runner was never disturbed is a double execution."""
    ledger = _ok() + _ok(node="n2", fence=20, attempt=2, at=T + 2)
    _only(check(ledger, [_rec(node="n2", fence=20, attempt=2)], _sc()), "one-winner")


def test_fences_that_do_not_rise_are_caught():
    """A later run under a lower fence (a stale claim acting) is caught."""
    ledger = [Line("start", "j", T, "n1", 20, 1, T + 0.1)] + _ok(node="n2", fence=10, attempt=2, at=T + 4)
    out = check(ledger, [_rec(node="n2", fence=10, attempt=2)], _sc(disturbed={"n1"}))
    assert any(v.startswith("one-winner") and "must rise" in v for v in out), out


def test_history_disagreeing_with_the_ledger_is_caught():
    """The recorded winner must be the run that last held the claim."""
    _only(check(_ok(), [_rec(node="n2", fence=11)], _sc()), "one-winner")


def test_early_start_is_caught():
    """A start before the slot breaks no-early-firing."""
    _only(check(_ok(at=T - 0.2), [_rec()], _sc()), "no-early")


def test_firing_without_record_is_caught():
    """A firing of the window with no record at all is a silent miss."""
    _only(check([], [], _sc(must_run=set())), "no-silent-miss")


def test_collected_history_is_not_a_miss_but_a_missing_run_still_is():
    """Before ``history_from`` a run without a record is fine (claims are collected); a firing that never ran is not."""
    assert check(_ok(), [], _sc(history_from=T + 1)) == []
    _only(check([], [], _sc(history_from=T + 1)), "no-silent-miss")


def test_unsettled_firing_is_caught():
    """A firing whose record still says running at the end is not settled."""
    _only(check(_ok(), [_rec(state="running")], _sc()), "no-silent-miss")


def test_firing_that_should_have_run_is_caught():
    """A `missed` record for a firing a live node should have run is caught; elsewhere it is fine."""
    recs = [_rec(state="missed", node=None, fence=0, attempt=0)]
    _only(check([], recs, _sc()), "no-silent-miss")
    assert check([], recs, _sc(must_run=set())) == []


def test_not_run_record_of_a_run_firing_is_caught():
    """A firing recorded `skipped` that actually ran is caught."""
    _only(check(_ok(), [_rec(state="skipped")], _sc()), "no-silent-miss")


def test_lost_run_not_rerun_is_caught():
    """A run that never ended and was not rerun breaks crash recovery."""
    ledger = [Line("start", "j", T, "n1", 10, 1, T + 0.1)]
    _only(check(ledger, [_rec()], _sc(disturbed={"n1"})), "crash-recovery")


def test_at_most_once_job_is_recorded_lost_and_not_rerun():
    """With on-node-loss skip the lost run is recorded `lost`, and a rerun is caught."""
    ledger = [Line("start", "j", T, "n1", 10, 1, T + 0.1)]
    lost = _rec(state="lost")
    assert check(ledger, [lost], _sc(disturbed={"n1"}, skip_on_loss={"j"})) == []
    rerun = ledger + _ok(node="n2", fence=20, attempt=2, at=T + 4)
    _only(check(rerun, [lost], _sc(disturbed={"n1"}, skip_on_loss={"j"})), "crash-recovery")
    _only(check(ledger, [lost], _sc(disturbed={"n1"})), "crash-recovery")


def test_doubled_completion_is_caught():
    """Two completions under one fence, or a completion under a fence never started, are caught."""
    ledger = _ok() + [Line("end", "j", T, "n1", 10, 1, T + 0.5)]
    _only(check(ledger, [_rec()], _sc()), "doubled-completion")
    ledger = _ok() + [Line("end", "j", T, "n2", 99, 1, T + 0.5)]
    _only(check(ledger, [_rec()], _sc()), "doubled-completion")
