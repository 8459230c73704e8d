"""The etcd keyspace under the prefix, in one place.

    <prefix>/jobs/<name>                 JobSpec JSON
    <prefix>/nodes/<id>                  node info JSON, on the node's lease
    <prefix>/leader/<lease hex>          election candidates, on their leases; lowest create revision leads
    <prefix>/leases/<lease hex>          one per lease a node registers on, on that lease, never deleted by hand:
                                         its delete is the lease's death (expiry or revoke), in the same
                                         revision as the delete of every running key on it
    <prefix>/claims/<job>/<slot>         the record of one firing (state, attempt, node, result); no lease
    <prefix>/running/<job>/<slot>        exists while the claim's run is alive, on the runner's lease
    <prefix>/runs/<job>                  its version counts the claims of the job (--max-runs)
    <prefix>/control/degrade             degraded levels {"levels": [3], "kill": false}
    <prefix>/control/kill/<job>          stop runs of the job whose fence is below this key's revision
    <prefix>/control/drain/<node>        the node stops claiming, finishes its runs and leaves
    <prefix>/control/trigger/<job>       run the job now (consumed by the claim)
    <prefix>/control/backfill/<job>/<id> a backfill request {"from": t, "to": t}
    <prefix>/control/lost/<job>/<slot>   a run its node stopped (recorded ``interrupted``) for another node
                                         to run again; deleted by the rerun's claim (or the leader)
    <prefix>/backfilled/<job>            slot ranges already handed to backfills (idempotence)
    <prefix>/chores/missed               the leader's missed-firing watermark {"at": t}: every firing whose
                                         start time + deadline + slack is at or before t has been judged
    <prefix>/chores/tick, control/tick,  the leader's ticks, one in each key range a node watches (the
    <prefix>/tick                        watch leaves out claims/ and running/): put every 30 s, so that no
                                         watcher's resume revision falls behind a compaction
    <prefix>/collected/<job>             the highest slot whose claim the leader collected (written with
                                         the deletes): every firing at or below it was judged
    <prefix>/applied/<job>               the job is managed by ``etcdcron apply`` (written with the job), so
                                         ``apply --prune`` may remove it; {"at": t}. ``add`` deletes it.
    <prefix>/accounts/<name>             a console/API account {"name", "role", "hash" (argon2id), "created",
                                         "generation"}; ``generation`` moves on each password change
    <prefix>/tokens/<sha256 hex>         an API token, by the SHA-256 of the token (the token itself is
                                         never stored) {"account", "created", "id"}

Slots are Unix seconds, zero-padded to 12 digits so that keys sort by time.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


def slot_key(slot: int) -> str:
    return f"{slot:012d}"


class Kind(StrEnum):
    """What a key under the prefix is (its first path segment; see the table above)."""

    JOB = "jobs"
    NODE = "nodes"
    CANDIDATE = "leader"
    LEASE = "leases"
    CLAIM = "claims"
    RUNNING = "running"
    RUNS = "runs"
    DEGRADE = "control/degrade"
    KILL = "control/kill"
    DRAIN = "control/drain"
    TRIGGER = "control/trigger"
    BACKFILL = "control/backfill"
    LOST = "control/lost"
    APPLIED = "applied"  # the job is managed by `etcdcron apply`; the view ignores it
    OTHER = "other"  # backfilled/, chores/, collected/ and anything unknown: the view ignores them


@dataclass(frozen=True)
class Parsed:
    """A key taken apart by :meth:`Keys.parse`, the inverse of the builders."""

    kind: Kind
    job: str = ""  # JOB, CLAIM, RUNNING, RUNS, KILL, TRIGGER, BACKFILL, APPLIED
    slot: int = 0  # CLAIM, RUNNING
    node: str = ""  # NODE, DRAIN; LEASE: the lease, in hex
    ident: str = ""  # BACKFILL: the request id

    @property
    def firing(self) -> tuple[str, int]:
        return self.job, self.slot


_OTHER = Parsed(Kind.OTHER)


@dataclass(frozen=True)
class Keys:
    prefix: str = "/etcdcron"

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", "/" + self.prefix.strip("/") if self.prefix.strip("/") else "")

    @property
    def root(self) -> str:
        return self.prefix + "/"

    def job(self, name: str) -> str:
        return f"{self.prefix}/jobs/{name}"

    @property
    def jobs(self) -> str:
        return f"{self.prefix}/jobs/"

    def node(self, node_id: str) -> str:
        return f"{self.prefix}/nodes/{node_id}"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}/nodes/"

    def candidate(self, lease: int) -> str:
        return f"{self.prefix}/leader/{lease:x}"

    @property
    def leader(self) -> str:
        return f"{self.prefix}/leader/"

    def lease_mark(self, lease: int) -> str:
        return f"{self.prefix}/leases/{lease:x}"

    def lost(self, job: str, slot: int) -> str:
        return f"{self.prefix}/control/lost/{job}/{slot_key(slot)}"

    def claim(self, job: str, slot: int) -> str:
        return f"{self.prefix}/claims/{job}/{slot_key(slot)}"

    def claims(self, job: str | None = None) -> str:
        return f"{self.prefix}/claims/{job}/" if job else f"{self.prefix}/claims/"

    def running(self, job: str, slot: int) -> str:
        return f"{self.prefix}/running/{job}/{slot_key(slot)}"

    @property
    def runnings(self) -> str:
        return f"{self.prefix}/running/"

    def runnings_of(self, job: str) -> str:
        return f"{self.prefix}/running/{job}/"

    def runs(self, job: str) -> str:
        return f"{self.prefix}/runs/{job}"

    def kill(self, job: str) -> str:
        return f"{self.prefix}/control/kill/{job}"

    def drain(self, node_id: str) -> str:
        return f"{self.prefix}/control/drain/{node_id}"

    def trigger(self, job: str) -> str:
        return f"{self.prefix}/control/trigger/{job}"

    def backfill(self, job: str, ident: str) -> str:
        return f"{self.prefix}/control/backfill/{job}/{ident}"

    def backfilled(self, job: str) -> str:
        return f"{self.prefix}/backfilled/{job}"

    @property
    def degrade(self) -> str:
        return f"{self.prefix}/control/degrade"

    def _split(self, key: str) -> tuple[str, list[str]]:
        """``<prefix>/claims/j/000000000060`` -> ``("claims", ["j", "000000000060"])``."""
        rest = key[len(self.prefix) + 1:]
        kind, _, tail = rest.partition("/")
        return kind, tail.split("/") if tail else []

    def parse(self, key: str) -> Parsed:
        """Take a key apart: ``keys.parse(keys.claim("j", 60))`` -> ``Parsed(Kind.CLAIM, job="j", slot=60)``.
        Keys of no known shape parse as ``Kind.OTHER``."""
        kind, parts = self._split(key)
        try:
            if kind == "jobs" and len(parts) == 1:
                return Parsed(Kind.JOB, job=parts[0])
            if kind == "nodes" and len(parts) == 1:
                return Parsed(Kind.NODE, node=parts[0])
            if kind == "leader" and len(parts) == 1:
                return Parsed(Kind.CANDIDATE)
            if kind == "leases" and len(parts) == 1:
                int(parts[0], 16)
                return Parsed(Kind.LEASE, node=parts[0])
            if kind in ("claims", "running") and len(parts) == 2:
                return Parsed(Kind(kind), job=parts[0], slot=int(parts[1]))
            if kind == "runs" and len(parts) == 1:
                return Parsed(Kind.RUNS, job=parts[0])
            if kind == "applied" and len(parts) == 1:
                return Parsed(Kind.APPLIED, job=parts[0])
            if kind == "control" and parts == ["degrade"]:
                return Parsed(Kind.DEGRADE)
            if kind == "control" and len(parts) == 2 and parts[0] in ("kill", "trigger"):
                return Parsed(Kind(f"control/{parts[0]}"), job=parts[1])
            if kind == "control" and len(parts) == 2 and parts[0] == "drain":
                return Parsed(Kind.DRAIN, node=parts[1])
            if kind == "control" and len(parts) == 3 and parts[0] == "lost":
                return Parsed(Kind.LOST, job=parts[1], slot=int(parts[2]))
            if kind == "control" and len(parts) == 3 and parts[0] == "backfill":
                return Parsed(Kind.BACKFILL, job=parts[1], ident=parts[2])
        except ValueError:
            pass
        return _OTHER

    @property
    def ticks(self) -> tuple[str, ...]:
        """One key in each range of a node's watch (see :mod:`etcdcron.view`): before ``claims/``,
        between it and ``running/``, after ``running/``."""
        return f"{self.prefix}/chores/tick", f"{self.prefix}/control/tick", f"{self.prefix}/tick"

    @property
    def missed_watermark(self) -> str:
        return f"{self.prefix}/chores/missed"

    def collected(self, job: str) -> str:
        return f"{self.prefix}/collected/{job}"

    @property
    def collecteds(self) -> str:
        return f"{self.prefix}/collected/"

    def applied(self, job: str) -> str:
        return f"{self.prefix}/applied/{job}"

    @property
    def applieds(self) -> str:
        return f"{self.prefix}/applied/"

    def account(self, name: str) -> str:
        return f"{self.prefix}/accounts/{name}"

    @property
    def accounts(self) -> str:
        return f"{self.prefix}/accounts/"

    def token(self, digest: str) -> str:
        return f"{self.prefix}/tokens/{digest}"

    @property
    def tokens(self) -> str:
        return f"{self.prefix}/tokens/"
