"""etcd security against real etcd processes: TLS with client certificates, etcd auth with a user whose
role may use one prefix only, the one-line errors of each misconfiguration, and a node serving jobs
through both."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from etcdcron.errors import (
    InvalidInput,
    StoreAuthFailed,
    StoreError,
    StorePermissionDenied,
    StoreTLSError,
    StoreUnavailable,
)
from etcdcron.nodes import wait_for
from etcdcron.store import EtcdStore
from etcdcron.testing import Certs, Cluster, EtcdCluster, cli_command, make_certs

USER, PASSWORD, ROOT_PASSWORD = "etcdcron", "s3cret-etcd-pw", "root-pw"
PREFIX = "/secure"  # the only keys USER's role may read and write: PREFIX + "/"
TOKEN_TTL = 2  # seconds an idle auth token lives (etcd's default is 300)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_etcd(certs, tmp_path_factory) -> EtcdCluster:
    """etcd serving https only to clients with a certificate of the test CA; auth off."""
    etcd = EtcdCluster(tmp_path_factory.mktemp("etcd-tls"), size=1, tls=certs).start()
    yield etcd
    etcd.stop()


@pytest.fixture(scope="module")
def auth_etcd(certs, tmp_path_factory) -> EtcdCluster:
    """etcd with TLS and auth on: root, and USER with read-write on PREFIX only; tokens expire quickly."""
    etcd = EtcdCluster(tmp_path_factory.mktemp("etcd-auth"), size=1, tls=certs,
                       extra_args=["--auth-token-ttl", str(TOKEN_TTL)]).start()
    etcd.enable_auth(PREFIX, user=USER, password=PASSWORD, root_password=ROOT_PASSWORD)
    yield etcd
    etcd.stop()


@pytest.fixture
def root(auth_etcd) -> EtcdStore:
    s = auth_etcd.client("root", ROOT_PASSWORD)
    yield s
    s.close()


@pytest.fixture(scope="module")
def password_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("secrets") / "etcd-password"
    p.write_text(PASSWORD + "\n")
    p.chmod(0o600)
    return p


@pytest.fixture(scope="module")
def wrong_password_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("secrets") / "wrong-password"
    p.write_text("not-the-password\n")
    return p


def tls_flags(certs: Certs, ca: Path | None = None, client: bool = True) -> list[str]:
    flags = ["--etcd-ca", str(ca or certs.ca)]
    if client:
        flags += ["--etcd-cert", str(certs.client_cert), "--etcd-key", str(certs.client_key)]
    return flags


def tls_env(certs: Certs) -> dict[str, str]:
    return {"ETCDCRON_ETCD_CA": str(certs.ca), "ETCDCRON_ETCD_CERT": str(certs.client_cert),
            "ETCDCRON_ETCD_KEY": str(certs.client_key)}


def cli(etcd: EtcdCluster, *args: str, prefix: str = PREFIX) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCRON_")}
    env.update(ETCDCRON_ETCD=etcd.endpoints, ETCDCRON_PREFIX=prefix)
    return subprocess.run([*cli_command(), *args], env=env, capture_output=True, text=True, timeout=60)


def one_line_error(r: subprocess.CompletedProcess, code: int, *parts: str) -> str:
    """The CLI failed with ``code`` and said why in exactly one line naming ``parts``."""
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def fresh_prefix() -> str:
    return f"{PREFIX}/t-{uuid.uuid4().hex[:8]}"


# --- TLS -------------------------------------------------------------------------------------


def put_get_watch_lease(s: EtcdStore, listed: bool = False, revoke: bool = False) -> None:
    """Put, get (and list), a watch that sees a leased key, and a keep-alive of that lease."""
    p = fresh_prefix()
    rev = s.put(p + "/a", "1")
    assert s.get(p + "/a").value == b"1"
    if listed:
        kvs, _ = s.get_prefix(p + "/")
        assert [kv.key for kv in kvs] == [p + "/a"]
    seen: list[str] = []
    w = s.watch(p + "/", rev + 1, lambda evs, _r: seen.extend(e.kv.key for e in evs), lambda: s.put(p + "/x", "r"))
    try:
        lease = s.grant(10)
        s.put(p + "/leased", "v", lease=lease)
        assert wait_for(lambda: p + "/leased" in seen, 10)
        assert s.keepalive(lease) > 0
        if revoke:
            s.revoke(lease)
    finally:
        w.stop()


def test_tls_store_with_ca_and_client_cert_works(tls_etcd, certs):
    """With the CA and a client certificate, put, get, watch, leases and etcd's clock work over TLS."""
    s = EtcdStore(tls_etcd.endpoints, ca=str(certs.ca), cert=str(certs.client_cert), key=str(certs.client_key))
    try:
        assert s.tls
        put_get_watch_lease(s)
        sent, received, server = s.server_time()
        assert sent - 2 <= server <= received + 1
    finally:
        s.close()


def test_tls_file_switches_tls_on_for_an_http_endpoint(tls_etcd, certs):
    """A CA or client certificate given with an http:// endpoint means TLS, never plaintext."""
    plain = tls_etcd.endpoints.replace("https://", "http://")
    s = EtcdStore(plain, ca=str(certs.ca), cert=str(certs.client_cert), key=str(certs.client_key))
    try:
        assert s.tls and s.status()["version"]
    finally:
        s.close()


def test_wrong_ca_is_a_tls_error_naming_the_ca(tls_etcd, certs):
    """A server certificate the given CA did not sign: StoreTLSError (not a retried StoreUnavailable), naming the CA."""
    s = EtcdStore(tls_etcd.endpoints, ca=str(certs.other_ca), cert=str(certs.client_cert), key=str(certs.client_key))
    try:
        with pytest.raises(StoreTLSError) as err:
            s.get("/k")
        assert not isinstance(err.value, StoreUnavailable)
        port = tls_etcd.endpoints.rsplit(":", 1)[1]
        assert str(err.value).startswith(f"etcd TLS handshake with 127.0.0.1:{port} failed: server certificate "
                                         f"not trusted by --etcd-ca {certs.other_ca} (")
        with pytest.raises(StoreTLSError, match="not trusted"):
            s.server_time()  # the HTTP clock check says the same
    finally:
        s.close()


def test_https_endpoint_without_ca_checks_the_system_roots(tls_etcd, certs):
    """https:// alone switches TLS on, against the system's CAs, which do not know the test CA."""
    s = EtcdStore(tls_etcd.endpoints, cert=str(certs.client_cert), key=str(certs.client_key))
    try:
        with pytest.raises(StoreTLSError, match="not trusted by the system's CA certificates .*give --etcd-ca"):
            s.status()
    finally:
        s.close()


def test_missing_or_foreign_client_cert_is_refused_with_its_cause(tls_etcd, certs):
    """No client certificate, or one from another CA, against --client-cert-auth: the cause, in one line."""
    s = EtcdStore(tls_etcd.endpoints, ca=str(certs.ca))
    try:
        with pytest.raises(StoreTLSError, match=r"refused the connection: a client certificate is required "
                                                r"\(--etcd-cert/--etcd-key\)$"):
            s.get("/k")
    finally:
        s.close()
    s = EtcdStore(tls_etcd.endpoints, ca=str(certs.ca), cert=str(certs.other_client_cert), key=str(certs.other_client_key))
    try:
        with pytest.raises(StoreTLSError, match=f"refused the client certificate --etcd-cert {certs.other_client_cert}"):
            s.get("/k")
    finally:
        s.close()


def test_unreachable_tls_endpoint_stays_unavailable(certs):
    """A dead https endpoint is StoreUnavailable (retried), not a TLS error."""
    s = EtcdStore("https://127.0.0.1:1", 0.5, ca=str(certs.ca), cert=str(certs.client_cert), key=str(certs.client_key))
    try:
        with pytest.raises(StoreUnavailable):
            s.get("/k")
    finally:
        s.close()


@pytest.mark.parametrize("kwargs, endpoints, says", [
    ({"cert": "CERT"}, "https://127.0.0.1:2379", "--etcd-cert and --etcd-key go together"),
    ({"key": "KEY"}, "https://127.0.0.1:2379", "--etcd-cert and --etcd-key go together"),
    ({"ca": "/nonexistent/ca.pem"}, "https://127.0.0.1:2379", "cannot read --etcd-ca /nonexistent/ca.pem"),
    ({"ca": "NOTPEM"}, "https://127.0.0.1:2379", "is not a PEM file"),
    ({}, "http://127.0.0.1:2379,https://127.0.0.1:2380", "mix http:// and https://"),
    ({}, "ftp://127.0.0.1:2379", "bad etcd endpoint"),
])
def test_bad_tls_settings_are_invalid_input(certs, tmp_path, kwargs, endpoints, says):
    """A half-given certificate pair, an unreadable or non-PEM file, mixed schemes: InvalidInput, one line."""
    notpem = tmp_path / "notpem"
    notpem.write_text("hello\n")
    names = {"CERT": str(certs.client_cert), "KEY": str(certs.client_key), "NOTPEM": str(notpem)}
    kwargs = {k: names.get(v, v) for k, v in kwargs.items()}
    with pytest.raises(InvalidInput, match=says) as err:
        EtcdStore(endpoints, **kwargs)
    assert "\n" not in str(err.value)


def test_cli_over_tls_works_and_each_tls_failure_is_one_line(tls_etcd, certs):
    """`ls` with --etcd-ca/--etcd-cert/--etcd-key works; a wrong CA or a missing client cert: one line, exit 1."""
    ok = cli(tls_etcd, "ls", *tls_flags(certs))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("NAME") and ok.stderr == ""
    one_line_error(cli(tls_etcd, "ls", *tls_flags(certs, ca=certs.other_ca)), 1,
                   "etcd TLS handshake with 127.0.0.1:", f"not trusted by --etcd-ca {certs.other_ca}")
    one_line_error(cli(tls_etcd, "ls", *tls_flags(certs, client=False)), 1,
                   "refused the connection: a client certificate is required (--etcd-cert/--etcd-key)")
    one_line_error(cli(tls_etcd, "ls", "--etcd-ca", str(certs.ca), "--etcd-cert", str(certs.client_cert)), 2,
                   "--etcd-cert and --etcd-key go together")


# --- auth ------------------------------------------------------------------------------------


def test_auth_user_works_inside_its_prefix(auth_etcd):
    """The user reads and writes under its prefix, with a watch and a lease, over TLS and auth."""
    s = auth_etcd.client(USER, PASSWORD)
    try:
        put_get_watch_lease(s, listed=True, revoke=True)
    finally:
        s.close()


def test_expired_token_is_renewed_for_calls_watches_and_keepalives(auth_etcd, root):
    """After etcd forgets the token (--auth-token-ttl), calls, a new watch stream and keep-alives
    authenticate again by themselves."""
    s = auth_etcd.client(USER, PASSWORD)
    try:
        p = fresh_prefix()
        rev = s.put(p + "/a", "1")
        lease = s.grant(30)
        first = s._token
        # etcd drops a simple token after TOKEN_TTL idle seconds (checked each second); no event says
        # so, and any use would keep it alive, so the only way to get there is to wait.
        time.sleep(TOKEN_TTL + 1.5)
        seen: list[str] = []
        w = s.watch(p + "/", rev + 1, lambda evs, _r: seen.extend(e.kv.key for e in evs), lambda: rev)
        try:
            root.put(p + "/b", "2")  # written by another client: the watch renews the token itself
            assert wait_for(lambda: p + "/b" in seen, 10), "the watch did not come back with a new token"
        finally:
            w.stop()
        assert s._token and s._token != first
        assert s.keepalive(lease) > 0
        time.sleep(TOKEN_TTL + 1.5)
        assert s.get(p + "/b").value == b"2"  # a plain call: refused once, renewed, retried
    finally:
        s.close()


def test_user_given_to_an_etcd_without_auth_connects(tls_etcd):
    """etcd with auth off answers Authenticate with "not enabled": the store goes on without a token."""
    s = tls_etcd.client(USER, "any")
    try:
        p = fresh_prefix()
        s.put(p + "/a", "1")
        assert s.get(p + "/a").value == b"1" and s._md() is None
    finally:
        s.close()


def test_bad_password_is_one_line(auth_etcd, wrong_password_file, certs):
    """A wrong password: StoreAuthFailed naming the user; the CLI prints one line and exits 1."""
    s = auth_etcd.client(USER, "wrong")
    try:
        with pytest.raises(StoreAuthFailed) as err:
            s.get(PREFIX + "/x")
        assert str(err.value) == f"etcd authentication failed for user '{USER}': invalid user name or password"
    finally:
        s.close()
    r = cli(auth_etcd, "ls", *tls_flags(certs), "--etcd-user", USER, "--etcd-password-file", str(wrong_password_file))
    one_line_error(r, 1, f"etcd authentication failed for user '{USER}': invalid user name or password")


def test_permission_denied_outside_the_prefix_is_one_line(auth_etcd, password_file, certs):
    """A key outside the user's prefix: StorePermissionDenied naming the operation, key and user; one CLI line, exit 1."""
    s = auth_etcd.client(USER, PASSWORD)
    try:
        with pytest.raises(StorePermissionDenied) as err:
            s.put("/elsewhere/x", "1")
        assert str(err.value) == f"etcd denied write /elsewhere/x: permission denied for user '{USER}'"
    finally:
        s.close()
    creds = [*tls_flags(certs), "--etcd-user", USER, "--etcd-password-file", str(password_file)]
    ok = cli(auth_etcd, "ls", *creds, prefix=fresh_prefix())
    assert ok.returncode == 0 and ok.stderr == "", ok.stderr
    r = cli(auth_etcd, "ls", *creds, prefix="/elsewhere")
    one_line_error(r, 1, "etcd denied read /elsewhere/jobs/", f"permission denied for user '{USER}'")


def test_password_comes_only_from_a_file(auth_etcd, certs, tmp_path):
    """There is no password flag; a missing password file or a user without one is bad input (exit 2)."""
    base = ["ls", *tls_flags(certs), "--etcd-user", USER]
    one_line_error(cli(auth_etcd, *base, "--etcd-password", PASSWORD), 2, "--etcd-password")
    missing = tmp_path / "nope"
    one_line_error(cli(auth_etcd, *base, "--etcd-password-file", str(missing)), 2,
                   f"cannot read --etcd-password-file {missing}")
    one_line_error(cli(auth_etcd, *base), 2, "--etcd-password-file")
    with pytest.raises(InvalidInput, match=f"cannot read --etcd-password-file {missing}"):
        EtcdStore.from_settings(auth_etcd.endpoints, user=USER, password_file=str(missing))


def test_a_failing_add_writes_nothing(auth_etcd, tls_etcd, root, certs, password_file, wrong_password_file):
    """`add` refused for a bad password, a prefix outside the role or a wrong CA: one line, exit 1, etcd unchanged."""
    before = root.status()["revision"]
    p = fresh_prefix()
    job = ["add", "* * * * *", "--name", "j", "--shell", "true"]
    user = ["--etcd-user", USER]
    one_line_error(cli(auth_etcd, *job, *tls_flags(certs), *user, "--etcd-password-file", str(wrong_password_file),
                       prefix=p), 1, "authentication failed")
    one_line_error(cli(auth_etcd, *job, *tls_flags(certs), *user, "--etcd-password-file", str(password_file),
                       prefix="/elsewhere"), 1, "etcd denied", "permission denied")
    one_line_error(cli(auth_etcd, *job, *tls_flags(certs, ca=certs.other_ca), *user, "--etcd-password-file",
                       str(password_file), prefix=p), 1, "not trusted")
    assert root.get_prefix(p + "/")[0] == [] and root.get_prefix("/elsewhere/")[0] == []
    assert root.status()["revision"] == before
    tls_store = tls_etcd.client()
    try:
        rev = tls_store.status()["revision"]
        one_line_error(cli(tls_etcd, *job, *tls_flags(certs, client=False), prefix=p), 1, "client certificate")
        assert tls_store.status()["revision"] == rev
    finally:
        tls_store.close()


def test_node_runs_jobs_on_a_tls_and_auth_etcd(auth_etcd, certs, password_file, tmp_path):
    """A real node (`serve`) with TLS and a prefix-limited user claims and runs a job's firing; its
    password is in no process's arguments."""
    prefix = fresh_prefix()
    env = {**tls_env(certs), "ETCDCRON_ETCD_USER": USER, "ETCDCRON_ETCD_PASSWORD_FILE": str(password_file)}
    c = Cluster(auth_etcd.endpoints, prefix, tmp_path, env=env, store=auth_etcd.client(USER, PASSWORD))
    try:
        c.start_nodes(1)
        c.add_ledger_job("j")  # through the CLI, credentials from the environment
        assert wait_for(lambda: any(ln.what == "end" for ln in c.lines()), 30), f"no run; logs in {tmp_path}"
        assert wait_for(lambda: any(cl.state == "succeeded" for cl in c.claims().values()), 15)
        cmdline = Path(f"/proc/{c.procs['n1'].pid}/cmdline").read_bytes()
        assert PASSWORD.encode() not in cmdline
        assert not [e for e in c.log("n1") if e.get("level") == "error"]
    finally:
        c.close()


def test_store_errors_stay_in_the_tree():
    """The new classes are StoreErrors (the CLI's exit 1) and not StoreUnavailable (not retried)."""
    for cls in (StoreTLSError, StoreAuthFailed, StorePermissionDenied):
        assert issubclass(cls, StoreError) and not issubclass(cls, StoreUnavailable)


def test_auth_renewal_wait_is_bounded():
    """A call that needs a token while another thread's Authenticate hangs gives up after the call timeout
    (StoreUnavailable, retried) instead of queueing without limit — the keep-alive must not starve."""
    import threading

    s = EtcdStore("http://127.0.0.1:1", 0.5, user="etcdcron", password="pw")
    outcome: list[BaseException | None] = []

    def call() -> None:
        try:
            s._md()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    s._auth_lock.acquire()  # an Authenticate under way on another thread
    try:
        t = threading.Thread(target=call, daemon=True)
        t.start()
        t.join(5)
        assert not t.is_alive(), "the call waited for the renewal without a bound"
    finally:
        s._auth_lock.release()
        s.close()
    assert isinstance(outcome[0], StoreUnavailable), outcome


def test_watch_denied_again_after_a_fresh_token_backs_off(auth_etcd):
    """A watch on a prefix the role lacks re-authenticates once (an expired token looks the same), then
    retries slowly instead of authenticating every two seconds."""
    s = auth_etcd.client(USER, PASSWORD)
    authentications: list[float] = []
    real = s._authenticate

    def counting() -> str:
        authentications.append(time.monotonic())
        return real()

    s._authenticate = counting
    w = s.watch("/elsewhere/", 1, lambda evs, _r: None, lambda: 0)
    try:
        assert wait_for(lambda: len(authentications) >= 2, 10), authentications
        time.sleep(4)  # the window in which the old backoff (at most 2 s) authenticated twice more
        assert len(authentications) == 2, authentications
    finally:
        w.stop()
        s.close()


def test_clock_check_against_a_server_not_speaking_tls_is_unavailable(certs):
    """etcd's clock read over https from a server that answers in plaintext is StoreUnavailable (retried),
    not a crash of the clock check."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    s = EtcdStore(f"https://127.0.0.1:{server.server_address[1]}", 1.0, ca=str(certs.ca))
    try:
        with pytest.raises(StoreUnavailable):
            s.server_time()
    finally:
        s.close()
        server.shutdown()
        server.server_close()
