"""What the CLI's management commands do, against etcd; the CLI only parses and prints."""

from __future__ import annotations

import dataclasses
import json
import math
import queue
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable
from zoneinfo import ZoneInfo

import structlog

from . import apply as jobfiles
from . import store as st
from .claims import Claim
from .errors import ConcurrentChange, InvalidSchedule, InvalidSpec, JobNotFound, NotFound
from .history import run_row
from .jobs import JobSpec, check_name
from .keys import Keys
from .nodes import leader_of
from .schedule import Schedule, parse_schedule
from .states import FINAL, NON_RUNS, UNFINISHED, State
from .store import KV, EtcdStore

log = structlog.get_logger("etcdcron.admin")

# etcd refuses a transaction with more than 128 compares or 128 operations (--max-txn-ops): a batch
# of apply stays within it (a created job is 2 operations, a pruned one 7).
TXN_OPS = 128
STRIP = 20  # outcomes in a job row's strip (the console's row of coloured cells)


class Admin:
    def __init__(self, store: EtcdStore, keys: Keys) -> None:
        self.store, self.keys = store, keys

    def put_job(self, spec: JobSpec, paused: bool | None = None) -> tuple[JobSpec, bool]:
        """Create or replace; returns (spec, created). A replaced job keeps its paused state unless
        ``paused`` says otherwise. A job written here is no longer managed by ``apply`` (``apply
        --prune`` leaves it alone). A compare-and-swap on what was read: a concurrent ``pause`` is
        kept, not written over."""
        key = self.keys.job(spec.name)
        while True:
            old = self.store.get(key)
            if paused is not None:
                spec = spec.replace(paused=paused)
            elif old is not None:
                spec = spec.replace(paused=JobSpec.from_json(old.value).paused)
            cond = st.mod_rev(key, "==", old.mod_revision) if old is not None else st.version(key, "==", 0)
            if self.store.txn([cond], [st.put(key, spec.to_json()), st.delete(self.keys.applied(spec.name))]).succeeded:
                return spec, old is None

    def put_entry(self, entry: jobfiles.Entry) -> tuple[JobSpec, bool]:
        """Write one job of a jobs file (validated by :func:`etcdcron.apply.entry`) alone, as ``add``
        writes a job: active from now on, paused only when the entry says so (the API's PUT /jobs/NAME)."""
        return self.put_job(entry.spec.replace(active_since=time.time()), entry.paused)

    def get_job(self, name: str) -> JobSpec:
        check_name(name)
        kv = self.store.get(self.keys.job(name))
        if kv is None:
            raise JobNotFound(f"no job named {name!r}")
        return JobSpec.from_json(kv.value)

    def jobs(self) -> list[JobSpec]:
        kvs, _ = self.store.get_prefix(self.keys.jobs)
        return [JobSpec.from_json(kv.value) for kv in kvs]

    def remove(self, name: str) -> None:
        self.get_job(name)
        self.store.txn([], self._removal(name))

    def _removal(self, name: str) -> list:
        """The deletes that remove a job with everything kept for it (not its claims: history)."""
        return [st.delete(self.keys.job(name)), st.delete(self.keys.runs(name)),
                st.delete(self.keys.trigger(name)), st.delete(self.keys.kill(name)),
                st.delete(self.keys.backfilled(name)), st.delete(self.keys.collected(name)),
                st.delete(self.keys.applied(name))]

    def apply(self, entries: list[jobfiles.Entry], *, prune: bool = False, dry_run: bool = False) -> list[jobfiles.Change]:
        """Make etcd hold the jobs of ``entries`` (validated by :func:`etcdcron.apply.load`): create
        the new ones, replace those that differ, and with ``prune`` remove the jobs apply manages
        that ``entries`` no longer name. Returns the diff; ``dry_run`` only computes it.

        Written in transactions of at most :data:`TXN_OPS` operations, each conditional on the
        revisions the diff was made against: a job changed meanwhile (``etcdcron add``, another
        apply) fails its batch whole with :class:`ConcurrentChange`, and nothing of it is written.
        Earlier batches stay written; applying again converges."""
        kvs, rev = self.store.get_prefix(self.keys.jobs)
        marks, _ = self.store.get_prefix(self.keys.applieds, revision=rev)
        stored = {self.keys.parse(kv.key).job: (JobSpec.from_json(kv.value), kv.mod_revision) for kv in kvs}
        managed = {self.keys.parse(kv.key).job: kv.mod_revision for kv in marks}
        changes = jobfiles.diff(entries, {n: s for n, (s, _) in stored.items()}, managed, prune)
        if dry_run:
            return changes
        now = time.time()
        by_name = {e.spec.name: e for e in entries}
        batch: list[tuple[str, list, list]] = []
        written = 0
        for c in changes:
            if c.action is jobfiles.Action.UNCHANGED:
                continue
            old, old_rev = stored.get(c.name, (None, 0))
            job_key, mark_key = self.keys.job(c.name), self.keys.applied(c.name)
            mark = st.put(mark_key, json.dumps({"at": now}))
            if c.action is jobfiles.Action.PRUNE:
                cond = [st.mod_rev(job_key, "==", old_rev), st.mod_rev(mark_key, "==", managed[c.name])]
                ops = self._removal(c.name)
            elif c.action is jobfiles.Action.CREATE:
                e = by_name[c.name]
                cond = [st.version(job_key, "==", 0)]
                ops = [st.put(job_key, e.spec.replace(active_since=now, paused=bool(e.paused)).to_json()), mark]
            elif [k for k, _, _ in c.fields] == ["managed"]:  # same spec: only take it over
                cond, ops = [st.mod_rev(job_key, "==", old_rev)], [mark]
            else:  # like `add` replacing a job: active from now on
                e = by_name[c.name]
                spec = e.spec.replace(active_since=now, paused=old.paused if e.paused is None else e.paused)
                cond, ops = [st.mod_rev(job_key, "==", old_rev)], [st.put(job_key, spec.to_json()), mark]
            if batch and (sum(len(b[1]) for b in batch) + len(cond) > TXN_OPS
                          or sum(len(b[2]) for b in batch) + len(ops) > TXN_OPS):
                written += self._apply_batch(batch, stored, written)
                batch = []
            batch.append((c.name, cond, ops))
        if batch:
            self._apply_batch(batch, stored, written)
        log.info("jobs.applied", **{a.value: sum(1 for c in changes if c.action is a) for a in jobfiles.Action})
        return changes

    def _apply_batch(self, batch: list[tuple[str, list, list]], stored: dict, written: int) -> int:
        names = [name for name, _, _ in batch]
        res = self.store.txn([c for _, cond, _ in batch for c in cond], [op for _, _, ops in batch for op in ops],
                             [st.get(self.keys.job(n)) for n in names])
        if res.succeeded:
            return len(batch)
        # the failure branch read the jobs back: name one that moved (else it was an apply marker)
        moved = [n for n, got in zip(names, res.ranges)
                 if (got[0].mod_revision if got else 0) != stored.get(n, (None, 0))[1]]
        what = f"job {moved[0]!r} changed" if moved else "a job's apply marker changed"
        raise ConcurrentChange(f"{what} in etcd while apply ran, so its batch of {len(batch)} job(s) was not written"
                               f"{f' ({written} written before it)' if written else ''}: run apply again")

    def export(self, fmt: str = "yaml") -> str:
        """The current jobs as a jobs file (``apply`` of it changes nothing)."""
        return jobfiles.dump(self.jobs(), fmt)

    def trigger(self, name: str) -> float:
        """Ask the nodes to run the job now, once; returns the request's instant."""
        return self.request_trigger(name).at

    def request_trigger(self, name: str) -> "Triggered":
        """Like :meth:`trigger`, with the revision of the request (what :meth:`wait_trigger` follows)."""
        spec = self.get_job(name)
        if spec.paused:
            raise InvalidSpec(f"job {name!r} is paused: resume it first")
        now = time.time()
        return Triggered(name, now, spec.level, self.store.put(self.keys.trigger(name), json.dumps({"at": now})))

    def wait_trigger(self, t: "Triggered", timeout: float | None = None,
                     notify: Callable[[str], None] | None = None, notify_after: float = 30.0) -> "TriggerOutcome":
        """Follow the firing that request ``t`` became until its record is final, or ``timeout`` seconds.

        Exactly that firing, whatever else the job runs meanwhile: a node consumes the request (deletes
        ``control/trigger/<job>``) in the very transaction that creates the firing's claim (see
        :meth:`etcdcron.firing.Firing.trigger`), so the claim whose create revision is the revision of
        that delete is ours. A request consumed without a claim was refused (its ``skipped`` or
        ``degraded`` record, if the node wrote one, is reported) or went with its removed job. A second
        request written before a node took ours replaces it; the firing that consumes it answers both.

        Both steps wait on etcd watches from the revision already known (nothing slips between a read
        and the watch); a watch that falls behind a compaction hands over the key as it is now."""
        deadline = None if timeout is None else time.monotonic() + timeout
        # Without a timeout a request no node takes would be waited for forever: say so once.
        nudge = time.monotonic() + notify_after if notify is not None and (timeout is None or timeout > notify_after) else None
        with _KeyEvents(self.store, self.keys.trigger(t.job), t.revision + 1) as events:
            consumed = None  # revision of the transaction that took the request; 0: taken, revision unknown
            while consumed is None:
                got = events.next(deadline if nudge is None else min(nudge, deadline or nudge))
                if got is None and nudge is not None and (deadline is None or time.monotonic() < deadline):
                    notify(f"job {t.job}: no node has taken the trigger after {notify_after:g} s (is a node serving "
                           f"level {t.level} running?); still waiting")
                    nudge = None
                    continue
                if got is None:
                    return TriggerOutcome(t, None, False, f"job {t.job}: no node took the trigger within {timeout:g} s "
                                          f"(is a node serving level {t.level} running?); the request stays in etcd")
                kind, kv = got
                if kind == "delete" or (kind == "reset" and kv is None):
                    consumed = kv.mod_revision if kind == "delete" else 0
        claim = self._claim_of(t, consumed)
        if claim is None:
            return self._unclaimed(t, consumed)
        slot = self.keys.parse(claim.key).slot
        with _KeyEvents(self.store, claim.key, claim.create_revision) as events:
            current = claim
            while True:
                got = events.next(deadline)
                if got is None:
                    rec = Claim.parse(t.job, slot, current.value, current.mod_revision)
                    return TriggerOutcome(t, _row(rec), False,
                                          f"job {t.job}: still {rec.state} after {timeout:g} s "
                                          f"(firing {_iso(slot)}, node {rec.node or '-'}, attempt {rec.attempt}); "
                                          f"it goes on: `etcdcron kill {t.job}` stops it")
                kind, kv = got
                if kv is None or kind == "delete" or kv.create_revision != claim.create_revision:
                    return TriggerOutcome(t, _row(Claim.parse(t.job, slot, current.value, current.mod_revision)), True,
                                          f"job {t.job}: the record of firing {_iso(slot)} left etcd before it was "
                                          f"seen final (see `etcdcron history {t.job}`)")
                current = kv
                rec = Claim.parse(t.job, slot, kv.value, kv.mod_revision)
                if rec.state in FINAL:
                    row = _row(rec)
                    return TriggerOutcome(t, row, True, outcome_line(row))

    def _claim_of(self, t: "Triggered", consumed: int) -> KV | None:
        """The claim created by the transaction that consumed request ``t`` (at revision ``consumed``;
        0: unknown, then the job's first claim made for a trigger after the request)."""
        kvs, _ = self.store.get_prefix(self.keys.claims(t.job))
        if consumed:
            return next((kv for kv in kvs if kv.create_revision == consumed), None)
        later = [kv for kv in kvs if kv.create_revision > t.revision
                 and Claim.parse(t.job, 0, kv.value, kv.mod_revision).record.reason == "trigger"]
        return min(later, key=lambda kv: kv.create_revision, default=None)

    def _unclaimed(self, t: "Triggered", consumed: int) -> "TriggerOutcome":
        """A request consumed without a claim: the job went, or a node refused to run it."""
        if self.store.get(self.keys.job(t.job)) is None:
            return TriggerOutcome(t, None, True, f"job {t.job} was removed before the trigger ran")
        # a node that refuses records the firing it tried (first free second from the request) when
        # it can: skipped (forbid: a run is alive) or degraded
        kvs, _ = self.store.get_prefix(self.keys.claims(t.job))
        for kv in sorted(kvs, key=lambda kv: kv.create_revision):
            c = Claim.parse(t.job, self.keys.parse(kv.key).slot, kv.value, kv.mod_revision)
            if (t.revision < kv.create_revision and (not consumed or kv.create_revision < consumed)
                    and int(t.at) <= c.slot < int(t.at) + TRIGGER_SECONDS and c.state in NON_RUNS):
                row = _row(c)
                return TriggerOutcome(t, row, True, f"job {t.job}: the trigger was refused: {outcome_line(row)}")
        return TriggerOutcome(t, None, True, f"job {t.job}: the trigger was refused (its level degraded, --max-runs "
                                             "reached, or the job changed as it was claimed); see the nodes' logs")

    def kill(self, name: str) -> int:
        """Stop the job's running runs (their process groups) now; returns how many were running."""
        self.get_job(name)
        running = self.store.count_prefix(self.keys.runnings_of(name))
        self.store.put(self.keys.kill(name), json.dumps({"reason": "kill", "at": time.time()}))
        return running

    def degrade(self, level: int, kill: bool) -> list[int]:
        """Stop starting jobs of ``level`` and above (and with ``kill``, stop their runs)."""
        if level not in (1, 2, 3):
            raise InvalidSpec(f"bad level {level!r}: must be 1, 2 or 3")
        kv = self.store.get(self.keys.degrade)
        cur = json.loads(kv.value) if kv else {}
        levels = sorted(set(cur.get("levels", [])) | set(range(level, 4)))
        self.store.put(self.keys.degrade, json.dumps({"levels": levels, "kill": kill or bool(cur.get("kill")),
                                                      "at": time.time()}))
        return levels

    def restore(self, level: int) -> list[int]:
        """End the degradation of ``level`` and above."""
        if level not in (1, 2, 3):
            raise InvalidSpec(f"bad level {level!r}: must be 1, 2 or 3")
        kv = self.store.get(self.keys.degrade)
        cur = json.loads(kv.value) if kv else {}
        levels = sorted(set(cur.get("levels", [])) - set(range(level, 4)))
        if levels:
            self.store.put(self.keys.degrade, json.dumps({**cur, "levels": levels}))
        else:
            self.store.delete(self.keys.degrade)
        return levels

    def drain(self, node_id: str) -> None:
        kvs, _ = self._registered()
        if node_id not in {json.loads(kv.value).get("id") for kv in kvs}:
            raise NotFound(f"no live node named {node_id!r}")
        self.store.put(self.keys.drain(node_id), json.dumps({"at": time.time()}))

    def backfill(self, name: str, start: float, end: float, limit: int = 10_000) -> dict:
        """Hand the firings of [start, end] to the nodes, each once: ranges already handed to a backfill
        are skipped, and the claims make a firing that already ran not run again."""
        spec = self.get_job(name)
        if end < start:
            raise InvalidSpec("bad --to: it is before --from")
        if end > time.time():
            raise InvalidSpec("bad --to: a backfill covers the past only")
        slots = spec.firings(start - 1, end, limit=limit + 1)
        if len(slots) > limit:
            raise InvalidSpec(f"bad range: more than {limit} firings; split it")
        while True:
            kv = self.store.get(self.keys.backfilled(name))
            covered = json.loads(kv.value) if kv else []
            fresh = [s for s in slots if not any(lo <= s <= hi for lo, hi in covered)]
            if not fresh:
                return {"job": name, "firings": 0, "already": len(slots)}
            ident = f"{int(time.time() * 1000):x}"
            req = {"from": fresh[0], "to": fresh[-1], "skip": covered, "at": time.time()}
            cond = [st.mod_rev(self.keys.backfilled(name), "==", kv.mod_revision) if kv
                    else st.version(self.keys.backfilled(name), "==", 0)]
            res = self.store.txn(cond, [st.put(self.keys.backfilled(name), json.dumps(_merge(covered + [[start, end]]))),
                                        st.put(self.keys.backfill(name, ident), json.dumps(req))])
            if res.succeeded:
                return {"job": name, "firings": len(fresh), "already": len(slots) - len(fresh), "request": ident}

    def set_paused(self, name: str, paused: bool) -> JobSpec:
        """Pause or resume with a compare-and-swap, so a concurrent change is never overwritten."""
        while True:
            check_name(name)
            kv = self.store.get(self.keys.job(name))
            if kv is None:
                raise JobNotFound(f"no job named {name!r}")
            spec = JobSpec.from_json(kv.value)
            new = spec.replace(paused=paused, active_since=spec.active_since if paused else time.time())
            res = self.store.txn([st.mod_rev(kv.key, "==", kv.mod_revision)], [st.put(kv.key, new.to_json())])
            if res.succeeded:
                return new

    def next_firings(self, name: str, n: int, after: float | None = None) -> list[dict]:
        """The next ``n`` firings after ``after`` (default now) inside the job's start/end window, fewer
        when it ends: :func:`firing_rows` (local, UTC, what a DST change does to each)."""
        spec = self.get_job(name)
        pairs = _firings(spec, n, time.time() if after is None else after)
        return firing_rows(spec.parsed, [u for _, u in pairs])

    def history(self, name: str | None, limit: int | None) -> list[Claim]:
        """The records of the etcd window (of job ``name``, else of every job), newest first by
        (slot, job); at most ``limit`` (None: all)."""
        if name:
            check_name(name)
        kvs, _ = self.store.get_prefix(self.keys.claims(name))
        claims = []
        for kv in kvs:
            k = self.keys.parse(kv.key)
            claims.append(Claim.parse(k.job, k.slot, kv.value, kv.mod_revision))
        claims.sort(key=lambda c: (c.slot, c.job), reverse=True)
        return claims if limit is None else claims[:limit]

    def job_rows(self) -> list[dict]:
        """Every job as a row of the jobs list (:func:`job_row`), by name; one read of the claims."""
        specs = sorted(self.jobs(), key=lambda j: j.name)  # the jobs first: what a denied read names
        by_job: dict[str, list[Claim]] = defaultdict(list)
        for c in self.history(None, None):
            by_job[c.job].append(c)
        now = time.time()
        return [job_row(spec, by_job.get(spec.name, []), now) for spec in specs]

    def job_row(self, name: str) -> dict:
        """One job as a row of the jobs list (:func:`job_row`)."""
        spec = self.get_job(name)
        return job_row(spec, self.history(name, None), time.time())

    def _registered(self) -> tuple[list, str | None]:
        kvs, _ = self.store.get_prefix(self.keys.nodes)
        cands, _ = self.store.get_prefix(self.keys.leader)
        return kvs, leader_of((kv.create_revision, kv.value.decode()) for kv in cands)

    def nodes(self) -> tuple[list[dict], str | None]:
        """The live nodes and the leader's id. Each node is its registration (id, host, pid, levels,
        lease, …) with ``leader``, ``lease_ttl`` (seconds its lease has left as etcd counts them; -1
        once expired), ``running`` (its live runs, ``[{"job", "slot"}]``) and ``draining``."""
        kvs, leader = self._registered()
        runs, _ = self.store.get_prefix(self.keys.runnings)
        drains, _ = self.store.get_prefix(self.keys.drain(""), keys_only=True)
        running: dict[str, list[dict]] = defaultdict(list)
        for kv in runs:  # a running key holds the id of the node that runs it
            k = self.keys.parse(kv.key)
            running[kv.value.decode()].append({"job": k.job, "slot": k.slot})
        drained = {self.keys.parse(kv.key).node for kv in drains}
        nodes = []
        for kv in kvs:
            n = json.loads(kv.value)
            nid = n.get("id")
            n["leader"] = nid == leader
            n["lease_ttl"] = self.store.time_to_live(kv.lease) if kv.lease else None
            n["running"] = sorted(running.get(nid, []), key=lambda r: (r["slot"], r["job"]))
            n["draining"] = bool(n.get("draining")) or nid in drained
            nodes.append(n)
        return sorted(nodes, key=lambda n: n.get("id", "")), leader

    def degraded(self) -> dict:
        """The degraded levels: ``{"levels": [..], "kill": bool, "at": t | None}`` (none: ``levels == []``)."""
        kv = self.store.get(self.keys.degrade)
        cur = json.loads(kv.value) if kv else {}
        return {"levels": sorted(cur.get("levels", [])), "kill": bool(cur.get("kill")), "at": cur.get("at")}

    def status(self) -> dict:
        nodes, leader = self._registered()
        jobs = self.jobs()
        recent = self.history(None, 10_000)
        states: dict[str, int] = {}
        for c in recent:
            states[c.state] = states.get(c.state, 0) + 1
        return {
            "etcd": self.store.status(),
            "nodes": len(nodes), "leader": leader,
            "jobs": len(jobs), "paused": sum(1 for j in jobs if j.paused),
            "running": self.store.count_prefix(self.keys.runnings),
            "claims_by_state": states,
            "degraded": self.degraded(),
        }


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


TRIGGER_SECONDS = 10  # a node tries the request's second and the next ones, this many (firing.Firing.trigger)


@dataclass(frozen=True)
class Triggered:
    """A trigger request as written to etcd."""

    job: str
    at: float  # the request's instant: its firing's slot is the first free second from it
    level: int  # the job's level (which nodes may take it)
    revision: int  # of the request's write: what consumes it comes later


@dataclass(frozen=True)
class TriggerOutcome:
    """What :meth:`Admin.wait_trigger` saw of a triggered firing."""

    request: Triggered
    run: dict | None  # the firing's record as the history shows it (:func:`etcdcron.history.run_row`); None: none
    final: bool  # False: the wait timed out (not taken yet, or ``run`` still going)
    note: str  # one line saying what became of it

    @property
    def succeeded(self) -> bool:
        return self.final and self.run is not None and self.run["state"] == State.SUCCEEDED


def _row(c: Claim) -> dict:
    return run_row(c.job, c.slot, {**c.data, "state": c.state, "fence": c.fence, "attempt": c.attempt})


def outcome_line(row: dict) -> str:
    """One firing's outcome in a line: ``job j, firing 2026-…Z: failed (exit 3) on n1, attempt 1, 0.02 s``."""
    parts = [f"on {row['node']}" if row["node"] else "", f"attempt {row['attempt']}" if row["attempt"] else "",
             f"{row['duration']:g} s" if row["duration"] is not None else ""]
    code = "" if row["exit_code"] is None else f" (exit {row['exit_code']})"
    why = f" ({row['reason']})" if row["state"] in NON_RUNS and row["reason"] else ""
    return f"job {row['job']}, firing {row['slot_utc']}: {row['state']}{code}{why} {', '.join(p for p in parts if p)}".rstrip()


class _KeyEvents:
    """The changes of one key from ``start`` on, in order, as ("put" | "delete", KV), from a supervised
    watch; a watch whose revision was compacted away hands over the key as it is now: ("reset", KV or None)."""

    def __init__(self, store: EtcdStore, key: str, start: int) -> None:
        self.store, self.key = store, key
        self._q: queue.Queue = queue.Queue()
        self._watch = store.watch(key, start, self._on_events, self._on_reset, name="trigger-wait")

    def _on_events(self, events, _revision: int) -> None:
        for ev in events:
            if ev.kv.key == self.key:  # the watch is of a prefix
                self._q.put((ev.kind, ev.kv))

    def _on_reset(self) -> int:
        kvs, revision = self.store.get_prefix(self.key)
        self._q.put(("reset", next((kv for kv in kvs if kv.key == self.key), None)))
        return revision

    def next(self, deadline: float | None) -> tuple[str, KV | None] | None:
        """The next change; None once ``deadline`` (monotonic; None: never) has passed."""
        try:
            return self._q.get(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None

    def __enter__(self) -> "_KeyEvents":
        return self

    def __exit__(self, *exc) -> None:
        self._watch.stop()


def _firings(spec: JobSpec, n: int, now: float) -> list[tuple[datetime, datetime]]:
    """The next ``n`` firings after ``now`` (and after the job's ``active_since``), as (local, UTC)."""
    zone = ZoneInfo(spec.tz)
    t = float(math.floor(max(now, spec.active_since)))  # whole seconds: firings are, and the memo is keyed by it
    out = []
    while len(out) < n:
        try:
            nxt = spec.next_after(t)
        except InvalidSchedule:  # "no firing after": the calendar ends (year 9999)
            break
        if nxt is None:
            break
        utc = datetime.fromtimestamp(nxt, timezone.utc)
        out.append((utc.astimezone(zone), utc))
        t = nxt
    return out


def schedule_firings(expr: str, tz: str, n: int, after: float | None = None) -> list[dict]:
    """The next ``n`` firings of a schedule not saved yet (``etcdcron next --schedule``) after ``after``
    (default now), as :func:`firing_rows`. Raises InvalidSchedule / InvalidZone."""
    schedule = parse_schedule(expr, tz)
    t = datetime.fromtimestamp(math.floor(time.time() if after is None else after), timezone.utc)
    out = []
    for _ in range(n):
        try:
            t = schedule.next_after(t)
        except InvalidSchedule:  # "no firing after": the calendar ends (year 9999)
            break
        out.append(t)
    return firing_rows(schedule, out)


def firing_rows(schedule: Schedule, instants: list[datetime]) -> list[dict]:
    """Firings as ``etcdcron next`` and the API show them: the local time with its offset, UTC, and the
    note of :meth:`Schedule.dst_note` (null unless a DST change touches the firing)."""
    zone = ZoneInfo(schedule.tz)
    return [{"local": t.astimezone(zone).isoformat(), "utc": t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
             "note": schedule.dst_note(t)} for t in instants]


def job_row(spec: JobSpec, claims: list[Claim], now: float) -> dict:
    """A job as the jobs list shows it: its spec, the schedule in words, the next firing (none while
    paused), its newest final record (``last``), how many of its runs are alive, and ``strip``: the
    states of its newest :data:`STRIP` records, oldest first. ``claims`` are the job's, newest first."""
    row = dataclasses.asdict(spec)
    row["words"] = schedule_words(spec.schedule)
    nxt = None if spec.paused else next(iter(_firings(spec, 1, now)), None)
    row["next"] = firing_rows(spec.parsed, [nxt[1]])[0] if nxt else None
    done = next((c for c in claims if c.state not in UNFINISHED), None)
    row["last"] = None if done is None else {
        "state": str(done.state), "slot": done.slot, "slot_utc": _iso(done.slot), "node": done.node, "fence": done.fence,
        "attempt": done.attempt, "ended": done.record.ended, "exit_code": done.record.exit_code}
    row["running"] = sum(1 for c in claims if c.running)
    row["strip"] = [str(c.state) for c in reversed(claims[:STRIP])]
    return row


_KEYWORD_WORDS = {"@hourly": "every hour", "@daily": "every day at 00:00", "@midnight": "every day at 00:00",
                  "@weekly": "every Sunday at 00:00", "@monthly": "on the 1st of every month at 00:00",
                  "@yearly": "every 1 January at 00:00", "@annually": "every 1 January at 00:00"}
_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def schedule_words(expr: str) -> str:
    """The common shapes of a schedule in words ("every 5 minutes", "every day at 03:30"); any
    other schedule as itself (it is already what cron users read)."""
    words = expr.split()
    if not words:
        return expr
    if words[0].lower() == "@every" and len(words) == 2:
        return f"every {words[1]}"
    if words[0].lower() in _KEYWORD_WORDS and len(words) == 1:
        return _KEYWORD_WORDS[words[0].lower()]
    if len(words) == 6:
        sec, rest = words[0], words[1:]
        if rest == ["*"] * 5:
            if sec == "*":
                return "every second"
            if sec.startswith("*/") and sec[2:].isdigit():
                return f"every {sec[2:]} seconds"
        if sec != "0":
            return expr
        words = rest
    if len(words) != 5:
        return expr
    minute, hour, dom, month, dow = words
    if (dom, month) != ("*", "*"):
        return expr
    if minute == "*" and hour == "*" and dow == "*":
        return "every minute"
    if minute.startswith("*/") and minute[2:].isdigit() and hour == "*" and dow == "*":
        return f"every {minute[2:]} minutes"
    if minute.isdigit() and hour == "*" and dow == "*":
        return f"every hour at minute {int(minute)}"
    if minute.isdigit() and hour.isdigit():
        at = f"{int(hour):02d}:{int(minute):02d}"
        if dow == "*":
            return f"every day at {at}"
        if dow.isdigit() and int(dow) < len(_DAYS):
            return f"every {_DAYS[int(dow)]} at {at}"
    return expr


def _merge(ranges: list[list[float]]) -> list[list[float]]:
    out: list[list[float]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return out
