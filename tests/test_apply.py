"""Jobs as code against a real etcd: apply creates, replaces and leaves alone, prunes only what it
manages, refuses a bad input whole, writes in bounded conditional batches; export round-trips."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from etcdcron import apply as jobfiles
from etcdcron.admin import Admin
from etcdcron.errors import ConcurrentChange, InvalidInput
from etcdcron.jobs import make_spec, parse_instant

from .test_cli import ROOT, run, snapshot

JOBS_YAML = """\
jobs:
  - name: hourly
    schedule: "0 * * * *"
    shell: echo hourly
    retries: 2
    args: {days: 7, app: web}
  - name: ping
    schedule: "@every 5m"
    http: https://example.com/hook
    tz: Europe/Berlin
    level: 3
    start_at: 2030-01-01T00:00:00Z
  - schedule: "30 2 * * *"
    builtin: noop
    concurrency: allow
    timeout: 30
"""

# the same three jobs, in TOML
JOBS_TOML = """\
[[jobs]]
name = "hourly"
schedule = "0 * * * *"
shell = "echo hourly"
retries = 2
args = { days = "7", app = "web" }

[[jobs]]
name = "ping"
schedule = "@every 5m"
http = "https://example.com/hook"
tz = "Europe/Berlin"
level = 3
start_at = 1893456000

[[jobs]]
name = "noop"
schedule = "30 2 * * *"
builtin = "noop"
concurrency = "allow"
timeout = 30.0
"""


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def names(changes, action: str) -> list[str]:
    return [c.name for c in changes if c.action == action]


def apply(admin: Admin, *paths: str, **kw):
    return admin.apply(jobfiles.load(paths), **kw)


def revision(store) -> int:
    return store.status()["revision"]


def test_apply_creates_then_a_second_apply_changes_nothing(store, keys, tmp_path):
    """The first apply creates every job as a file describes it (marked as applied); the second
    finds them all unchanged, says so, and writes nothing."""
    admin = Admin(store, keys)
    path = write(tmp_path, "jobs.yaml", JOBS_YAML)
    first = apply(admin, path)
    assert names(first, "create") == ["hourly", "ping", "noop"]
    assert jobfiles.describe(first, False).splitlines()[-1] == "3 created, 0 replaced, 0 unchanged, 0 pruned"
    hourly, ping, noop = admin.get_job("hourly"), admin.get_job("ping"), admin.get_job("noop")
    assert (hourly.kind, hourly.target, hourly.retries, hourly.args) == ("shell", "echo hourly", 2, {"days": "7", "app": "web"})
    assert (ping.kind, ping.tz, ping.level, ping.start_at) == ("http", "Europe/Berlin", 3, parse_instant("2030-01-01T00:00:00Z", ""))
    assert (noop.kind, noop.target, noop.concurrency, noop.timeout) == ("builtin", "noop", "allow", 30)
    assert hourly.active_since > 0  # active from when it was applied, like `add`
    assert all(store.get(keys.applied(n)) is not None for n in ("hourly", "ping", "noop"))
    before = revision(store)
    second = apply(admin, path)
    assert names(second, "unchanged") == ["hourly", "ping", "noop"]
    assert jobfiles.describe(second, False) == "0 created, 0 replaced, 3 unchanged, 0 pruned"
    assert revision(store) == before


def test_yaml_and_toml_describe_the_same_jobs(store, keys, tmp_path):
    """A TOML file with the same jobs as a YAML file applies as all unchanged after the YAML one."""
    admin = Admin(store, keys)
    apply(admin, write(tmp_path, "jobs.yaml", JOBS_YAML))
    again = apply(admin, write(tmp_path, "jobs.toml", JOBS_TOML))
    assert names(again, "unchanged") == ["hourly", "ping", "noop"], again


def test_a_changed_key_replaces_that_job_only_and_names_old_and_new(store, keys, tmp_path):
    """Changing one key replaces that job alone; the diff names the key with its old and new value."""
    admin = Admin(store, keys)
    apply(admin, write(tmp_path, "jobs.yaml", JOBS_YAML))
    changed = write(tmp_path, "jobs2.yaml", JOBS_YAML.replace('"0 * * * *"', '"5 * * * *"').replace("level: 3", "level: 1"))
    res = apply(admin, changed, dry_run=True)
    assert names(res, "replace") == ["hourly", "ping"] and names(res, "unchanged") == ["noop"]
    text = jobfiles.describe(res, True)
    assert '~ hourly: schedule "0 * * * *" → "5 * * * *"' in text
    assert "~ ping: level 3 → 1" in text
    res = apply(admin, changed)
    assert admin.get_job("hourly").schedule == "5 * * * *" and admin.get_job("ping").level == 1
    assert jobfiles.result(res, False)["changes"]["hourly"] == {"schedule": ["0 * * * *", "5 * * * *"]}


def test_paused_counts_only_when_the_file_gives_it(store, keys, tmp_path):
    """A job paused by `pause` stays paused through an apply that says nothing about it; a file
    saying paused: false resumes it (a replace)."""
    admin = Admin(store, keys)
    path = write(tmp_path, "jobs.yaml", JOBS_YAML)
    apply(admin, path)
    admin.set_paused("hourly", True)
    assert names(apply(admin, path), "unchanged") == ["hourly", "ping", "noop"]
    assert admin.get_job("hourly").paused
    resumed = write(tmp_path, "resumed.yaml", JOBS_YAML.replace("    retries: 2\n", "    retries: 2\n    paused: false\n"))
    res = apply(admin, resumed)
    assert [c.fields for c in res if c.name == "hourly"] == [(("paused", True, False),)]
    assert not admin.get_job("hourly").paused


def test_prune_removes_only_jobs_apply_manages(store, keys, tmp_path):
    """--prune removes the applied jobs the files no longer name, with their keys; a job made with
    `add` is never pruned, even one apply once wrote and `add` then replaced."""
    admin = Admin(store, keys)
    admin.put_job(make_spec("manual", "@daily", shell="true"))
    apply(admin, write(tmp_path, "jobs.yaml", JOBS_YAML))
    admin.put_job(make_spec("noop", "@daily", builtin="noop"))  # `add` takes noop over
    store.put(keys.collected("ping"), "1")
    only_hourly = write(tmp_path, "hourly.yaml", """\
        jobs:
          - {name: hourly, schedule: "0 * * * *", shell: echo hourly, retries: 2, args: {days: "7", app: web}}
        """)
    assert names(apply(admin, only_hourly), "prune") == []  # without --prune nothing goes
    res = apply(admin, only_hourly, prune=True)
    assert names(res, "prune") == ["ping"] and names(res, "unchanged") == ["hourly"]
    assert sorted(j.name for j in admin.jobs()) == ["hourly", "manual", "noop"]
    assert store.get(keys.applied("ping")) is None and store.get(keys.collected("ping")) is None
    assert names(apply(admin, write(tmp_path, "empty.yaml", "jobs: []\n"), prune=True), "prune") == ["hourly"]
    assert sorted(j.name for j in admin.jobs()) == ["manual", "noop"]


def test_apply_takes_over_a_job_made_with_add(store, keys, tmp_path):
    """A job made with `add` that a file names with the same spec is taken over (a replace of
    'managed' alone, the spec untouched); from then on --prune may remove it."""
    admin = Admin(store, keys)
    admin.put_job(make_spec("hourly", "0 * * * *", shell="echo hourly", active_since=123.0))
    path = write(tmp_path, "jobs.yaml", 'jobs: [{name: hourly, schedule: "0 * * * *", shell: echo hourly}]')
    res = apply(admin, path)
    assert [(c.action, c.fields) for c in res] == [("replace", (("managed", False, True),))]
    assert admin.get_job("hourly").active_since == 123.0
    assert names(apply(admin, path), "unchanged") == ["hourly"]
    assert names(apply(admin, write(tmp_path, "none.yaml", ""), prune=True), "prune") == ["hourly"]


def test_dry_run_prints_the_diff_and_writes_nothing(store, keys, tmp_path):
    """--dry-run reports creates, replaces and prunes exactly as apply would do them; etcd's revision does not move."""
    admin = Admin(store, keys)
    apply(admin, write(tmp_path, "jobs.yaml", JOBS_YAML))
    before = revision(store)
    new = write(tmp_path, "new.yaml", """\
        jobs:
          - {name: hourly, schedule: "0 * * * *", shell: echo hourly, retries: 3, args: {days: "7", app: web}}
          - {name: fresh, schedule: "@daily", shell: "true"}
        """)
    res = apply(admin, new, prune=True, dry_run=True)
    assert jobfiles.describe(res, True).splitlines() == [
        "~ hourly: retries 2 → 3", "+ fresh", "- noop", "- ping",
        "dry run, nothing written: 1 to create, 1 to replace, 0 unchanged, 2 to prune"]
    assert jobfiles.result(res, True) == {"created": ["fresh"], "replaced": ["hourly"], "unchanged": [],
                                          "pruned": ["noop", "ping"], "changes": {"hourly": {"retries": [2, 3]}},
                                          "dry_run": True}
    assert revision(store) == before


def test_a_bad_job_in_the_second_file_refuses_everything(store, keys, tmp_path):
    """One bad job in any file: one line naming the file, the job and the field; nothing of any file written."""
    admin = Admin(store, keys)
    good = write(tmp_path, "a.yaml", JOBS_YAML)
    bad = write(tmp_path, "b.toml", '[[jobs]]\nname = "x"\nschedule = "@daily"\nshell = "true"\n\n'
                                    '[[jobs]]\nname = "nightly"\nschedule = "61 * * * *"\nshell = "true"\n')
    before = revision(store)
    with pytest.raises(InvalidInput) as err:
        apply(admin, good, bad)
    message = str(err.value)
    assert message.startswith(f'{bad}: job "nightly": bad schedule \'61 * * * *\'') and "\n" not in message
    assert revision(store) == before and admin.jobs() == []


BAD = [
    ('jobs: [{name: x, schedule: "@daily", shell: "true", shedule: "@daily"}]', 'job "x": unknown key \'shedule\' (did you mean \'schedule\'?)'),
    ('jobs: [{name: x, schedule: "@daily"}]', 'job "x": give exactly one of builtin, shell or http'),
    ('jobs: [{name: x, schedule: "@daily", shell: "true", http: "http://h/"}]', "(got shell, http)"),
    ('jobs: [{name: x, shell: "true"}]', 'job "x": schedule is missing'),
    ('jobs: [{schedule: "@daily", shell: "true"}]', "job #1: name is missing"),
    ('jobs: [{name: x, schedule: "@daily", shell: "true", level: "2"}]', "bad level '2': must be an integer"),
    ('jobs: [{name: x, schedule: "@daily", shell: "true", level: 4}]', 'job "x": bad level 4: must be 1, 2 or 3'),
    ('jobs: [{name: x, schedule: "@daily", shell: "true", starting_deadline: 0}]', "bad starting_deadline 0"),
    ('jobs: [{name: x, schedule: "@daily", shell: "true", retries: true}]', "bad retries true"),
    ('jobs: [{name: x, schedule: "@daily", shell: "true", paused: "no"}]', "bad paused 'no': must be true or false"),
    ('jobs: [{name: x, schedule: "@daily", shell: "true", args: [a]}]', "bad args"),
    ('jobs: [{name: x, schedule: "@daily", shell: "true", args: {a: {b: c}}}]', "bad args entry 'a'"),
    ('jobs: [{name: x, schedule: "@daily", shell: "true", start_at: tomorrow}]', "bad start_at 'tomorrow'"),
    ('jobs: [{name: x, schedule: "@daily", shell: "true", start_at: 2030-01-02, end_at: 2030-01-01}]',
     "bad end_at: it is before start_at"),
    ('jobs: [{name: x, schedule: "@daily", shell: "true", tz: Mars/Olympus}]', "'Mars/Olympus'"),
    ('jobs: [{name: Bad Name, schedule: "@daily", shell: "true"}]', 'job "Bad Name": bad job name'),
    ('jobs: [{name: x, schedule: "@daily", http: "ftp://h/x"}]', "bad http URL 'ftp://h/x'"),
    ('jobs: [{schedule: "@daily", builtin: no-such-builtin}]', 'job "no-such-builtin": unknown builtin job'),
    ('jobs: [{name: x, schedule: "@daily", shell: ""}]', "bad shell '': must not be empty"),
    ('jobs: [{name: x, schedule: "@daily", shell: "true"}, {name: x, schedule: "@hourly", shell: "true"}]',
     'job "x": named twice'),
    ('jobs: [x]', "job #1: must be a table of job keys, not a string"),
    ("jobs: {name: x}", "'jobs' must be a list of job tables"),
    ("job: []", "unknown top-level key 'job'"),
    ("jobs: [{name: x, schedule: '@daily'\n", "bad YAML"),
]


@pytest.mark.parametrize("text,needle", BAD, ids=[n[:40] for _, n in BAD])
def test_bad_input_is_one_line_naming_file_job_and_field(tmp_path, text, needle):
    """Each bad file is refused with one line that starts with the file and names the job and the bad part."""
    path = write(tmp_path, "jobs.yaml", text)
    with pytest.raises(InvalidInput) as err:
        jobfiles.load([path])
    message = str(err.value)
    assert message.startswith(f"{path}: ") and needle in message and "\n" not in message, message


def test_duplicate_names_across_files_and_bad_toml_are_refused(tmp_path):
    """A job named in two files is refused naming both; a TOML syntax error names the file and line."""
    a = write(tmp_path, "a.yaml", 'jobs: [{name: x, schedule: "@daily", shell: "true"}]')
    b = write(tmp_path, "b.toml", '[[jobs]]\nname = "x"\nschedule = "@daily"\nshell = "true"\n')
    with pytest.raises(InvalidInput, match=f'^{b}: job "x": named twice \\(also in {a}\\)$'):
        jobfiles.load([a, b])
    broken = write(tmp_path, "c.toml", '[[jobs]]\nname = "x\n')
    with pytest.raises(InvalidInput, match=f"^{broken}: bad TOML: .*line 2"):
        jobfiles.load([broken])
    with pytest.raises(InvalidInput, match="missing.yaml: cannot read"):
        jobfiles.load([str(tmp_path / "missing.yaml")])


@pytest.mark.parametrize("fmt", ["yaml", "toml"])
def test_export_then_apply_is_all_unchanged(store, keys, tmp_path, fmt):
    """export writes every job with its non-default keys only; applying that export changes nothing."""
    admin = Admin(store, keys)
    apply(admin, write(tmp_path, "jobs.yaml", JOBS_YAML))
    odd = make_spec("odd", "*/7 * * * * *", shell='printf "%s\\n" \'q\' \x7f ü', tz="America/New_York", level=1,
                    concurrency="replace", timeout=2.5, retries=100, starting_deadline=5, jitter=0.25,
                    on_node_loss="skip", args={"k y": 'v"=\n'}, catchup="all", catchup_cap=3, retry_delay=0.5,
                    start_at=1_800_000_000.125, end_at=1_900_000_000, max_runs=9, active_since=1.0)
    admin.put_job(odd)
    admin.set_paused("odd", True)
    text = admin.export(fmt)
    assert "active_since" not in text and "starting_deadline" not in text.split("odd")[0]  # defaults left out
    path = write(tmp_path, f"export.{fmt}", text)
    res = apply(admin, path)
    # odd was made with `add`: apply takes it over, and nothing but that
    assert [(c.name, c.action, c.fields) for c in res if c.action != "unchanged"] == [("odd", "replace", (("managed", False, True),))]
    assert names(apply(admin, path), "unchanged") == ["hourly", "noop", "odd", "ping"]
    assert admin.get_job("odd").replace(active_since=1.0, paused=False) == odd


def test_more_jobs_than_one_transaction_holds_go_in_batches(store, keys, tmp_path):
    """Hundreds of jobs are created, found unchanged and pruned in several transactions, each within etcd's 128 operations."""
    admin = Admin(store, keys)
    many = "jobs:\n" + "".join(f'  - {{name: job-{i:03d}, schedule: "@every {i + 1}m", shell: "echo {i}"}}\n' for i in range(250))
    res = apply(admin, write(tmp_path, "many.yaml", many))
    assert len(names(res, "create")) == 250
    kvs, _ = store.get_prefix(keys.jobs)
    assert len(kvs) == 250 and len({kv.mod_revision for kv in kvs}) >= 4  # 2 operations a job: at most 64 a batch
    assert len(names(apply(admin, write(tmp_path, "many.yaml", many)), "unchanged")) == 250
    res = apply(admin, write(tmp_path, "few.yaml", "jobs: []"), prune=True)
    assert len(names(res, "prune")) == 250 and admin.jobs() == []
    assert store.get_prefix(keys.applieds)[0] == []


def test_a_concurrent_change_fails_the_batch_instead_of_overwriting(store, keys, tmp_path):
    """A job written by someone else between apply's read and its write fails apply with a retryable
    error naming it; that write is kept and nothing of the batch is written; applying again converges."""
    admin = Admin(store, keys)
    path = write(tmp_path, "jobs.yaml", JOBS_YAML)
    theirs = make_spec("hourly", "@daily", shell="echo theirs")

    class Racing:
        """The store, with an `etcdcron add` landing right after apply has read the jobs."""

        def __getattr__(self, name):
            return getattr(store, name)

        def get_prefix(self, prefix, *args, **kw):
            if prefix == keys.applieds:
                Admin(store, keys).put_job(theirs)
            return store.get_prefix(prefix, *args, **kw)

    with pytest.raises(ConcurrentChange, match="job 'hourly' changed in etcd while apply ran.*run apply again"):
        Admin(Racing(), keys).apply(jobfiles.load([path]))
    assert [j.name for j in admin.jobs()] == ["hourly"] and admin.get_job("hourly").target == "echo theirs"
    res = apply(admin, path)
    assert names(res, "create") == ["ping", "noop"] and names(res, "replace") == ["hourly"]


# --- the command line ------------------------------------------------------------------------------

def test_cli_apply_json_exit_codes_and_export_round_trip(etcd, prefix, store, tmp_path):
    """`apply --json` answers what changed (exit 0); a bad file is one line, exit 2, nothing written;
    `export | apply -` finds everything unchanged."""
    path = write(tmp_path, "jobs.yaml", JOBS_YAML)
    r = run(etcd, prefix, "apply", path, "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["created"] == ["hourly", "ping", "noop"] and json.loads(r.stdout)["dry_run"] is True
    assert snapshot(store, prefix) == []
    r = run(etcd, prefix, "apply", path, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"created": ["hourly", "ping", "noop"], "replaced": [], "unchanged": [], "pruned": [],
                                    "changes": {}, "dry_run": False}
    r = run(etcd, prefix, "apply", path)
    assert r.returncode == 0 and r.stdout.strip() == "0 created, 0 replaced, 3 unchanged, 0 pruned"

    before = snapshot(store, prefix)
    bad = write(tmp_path, "bad.yaml", 'jobs: [{name: late, schedule: "@daily", shell: "true", retries: -1}]')
    r = run(etcd, prefix, "apply", path, bad, "--prune")
    assert r.returncode == 2 and r.stderr.strip() == f'error: {bad}: job "late": bad retries -1: must be an integer from 0 to 100'
    assert snapshot(store, prefix) == before

    for fmt in ("yaml", "toml"):
        exported = run(etcd, prefix, "export", "--format", fmt)
        assert exported.returncode == 0, exported.stderr
        env_run = [sys.executable, str(ROOT / "cli.py"), "apply", "-", "--format", fmt, "--prune", "--json",
                   "--etcd", etcd, "--prefix", prefix]
        r = subprocess.run(env_run, input=exported.stdout, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["unchanged"] == ["hourly", "noop", "ping"], r.stdout
    out = tmp_path / "out.toml"
    assert run(etcd, prefix, "export", "--format", "toml", "-o", str(out)).returncode == 0
    assert "[[jobs]]" in out.read_text() and snapshot(store, prefix) == before


def test_add_keeps_a_pause_that_lands_between_its_read_and_write(store, keys):
    """add (put_job) is a compare-and-swap: a pause written after add read the job is kept, not overwritten."""
    Admin(store, keys).put_job(make_spec("racy", "@hourly", builtin="noop"))

    class PauseAfterFirstRead:
        def __init__(self, inner) -> None:
            self.inner, self.paused = inner, False

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def get(self, key):
            kv = self.inner.get(key)
            if not self.paused:
                self.paused = True
                Admin(self.inner, keys).set_paused("racy", True)  # another operator, just now
            return kv

    Admin(PauseAfterFirstRead(store), keys).put_job(make_spec("racy", "@daily", builtin="noop"))
    spec = Admin(store, keys).get_job("racy")
    assert spec.schedule == "@daily" and spec.paused
