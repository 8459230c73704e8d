"""Authentication of the real `etcdcron web` process: login form, sessions, CSRF, throttling, tokens,
TLS; and the session and throttle rules with an injected clock."""

from __future__ import annotations

import re
import ssl
import subprocess

import httpx
import pytest

from etcdcron.accounts import Account, Accounts, Role
from etcdcron.testing import cli_command, make_certs
from etcdcron.web.auth import Sessions, Throttle

from .conftest import start_web, stop


def _form_token(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def _login(client: httpx.Client, name: str, password: str, next_: str = "") -> httpx.Response:
    token = _form_token(client.get("/login").text)
    return client.post("/login", data={"username": name, "password": password, "csrf": token, "next": next_})


def _session(web) -> httpx.Client:
    c = httpx.Client(base_url=web.url, timeout=30)
    assert _login(c, "operator", web.password["operator"]).status_code == 303
    return c


def _csrf(client: httpx.Client) -> str:
    """The session's CSRF token, as a console page hands it to its scripts."""
    return re.search(r'name="csrf-token" content="([^"]+)"', client.get("/jobs").text).group(1)


def test_everything_but_login_and_static_needs_credentials(web):
    """Without a session or token the API answers 401 JSON, a page redirects to the login, and the login page is served."""
    with httpx.Client(base_url=web.url, timeout=30) as c:
        r = c.get("/api/v1/jobs")
        assert r.status_code == 401 and r.json() == {"error": "not authenticated: log in, or send 'Authorization: Bearer <token>'"}
        assert c.get("/api/v1/openapi.json").status_code == 401
        r = c.get("/jobs")
        assert r.status_code == 303 and r.headers["location"] == "/login?next=/jobs"
        r = c.get("/login")
        assert r.status_code == 200 and 'id="login-form"' in r.text
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert c.get("/static/style.css").status_code == 200


def test_login_sets_a_httponly_samesite_cookie_and_logout_ends_it_server_side(web):
    """A good login redirects with an HttpOnly SameSite cookie; after logout the same cookie is refused."""
    c = httpx.Client(base_url=web.url, timeout=30)
    r = _login(c, "operator", web.password["operator"], "/runs")
    assert r.status_code == 303 and r.headers["location"] == "/runs"
    cookie = r.headers["set-cookie"]
    assert "etcdcron_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    sid = c.cookies["etcdcron_session"]
    assert c.get("/api/v1/me").json()["name"] == "operator"
    assert c.post("/logout", data={"csrf": _csrf(c)}).status_code == 303
    replay = httpx.Client(base_url=web.url, cookies={"etcdcron_session": sid}, timeout=30)
    assert replay.get("/api/v1/me").status_code == 401


def test_wrong_password_and_foreign_redirect_are_refused(web):
    """A wrong password is a 401 page with one line; `next` pointing off the site lands on /jobs instead."""
    c = httpx.Client(base_url=web.url, timeout=30)
    r = _login(c, "operator", "not-the-password")
    assert r.status_code == 401 and "wrong user name or password" in r.text
    assert "etcdcron_session" not in c.cookies
    r = _login(c, "operator", web.password["operator"], "//evil.example/x")
    assert r.status_code == 303 and r.headers["location"] == "/jobs"


def test_login_form_needs_its_csrf_token(web):
    """A login POST without the form's token (a cross-site form) is refused and logs nobody in."""
    c = httpx.Client(base_url=web.url, timeout=30)
    r = c.post("/login", data={"username": "operator", "password": web.password["operator"], "csrf": "forged"})
    assert r.status_code == 403 and "etcdcron_session" not in c.cookies


def test_cookie_mutation_needs_the_csrf_header(web):
    """With a session cookie, a mutating API call without X-CSRF-Token is 403; with it, it is not."""
    c = _session(web)
    r = c.post("/api/v1/cluster/restore", json={"level": 3})
    assert r.status_code == 403 and "X-CSRF-Token" in r.json()["error"]
    r = c.post("/api/v1/cluster/restore", json={"level": 3}, headers={"X-CSRF-Token": _csrf(c)})
    assert r.status_code == 200, r.text


def test_failed_logins_are_throttled(web):
    """After five failures for one name, even the right password gets 429 with Retry-After."""
    c = httpx.Client(base_url=web.url, timeout=30)
    for _ in range(5):
        assert _login(c, "viewer", "wrong-password!").status_code == 401
    r = _login(c, "viewer", web.password["viewer"])
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert "too many failed logins" in r.text


def test_password_change_and_removal_end_sessions_and_tokens(web):
    """`accounts passwd` ends the account's browser sessions; `accounts rm` also revokes its tokens."""
    c = _session(web)
    assert c.get("/api/v1/me").status_code == 200
    Accounts(web.store, web.keys).set_password("operator", "a brand new password")
    assert c.get("/api/v1/me").status_code == 401
    with web.api("operator") as api:
        assert api.get("/me").status_code == 200
        web.cli("accounts", "rm", "operator")
        assert api.get("/me").status_code == 401


def test_a_removed_and_recreated_account_gets_no_old_session_or_token(web):
    """`accounts rm` then `create` of the same name: the old browser session and API token are refused."""
    c = _session(web)
    accounts = Accounts(web.store, web.keys)
    accounts.remove("operator")
    accounts.create("operator", Role.ADMIN, "a brand new password")
    assert c.get("/api/v1/me").status_code == 401
    with web.api("operator") as api:
        assert api.get("/me").status_code == 401


def test_concurrent_wrong_passwords_cannot_pass_the_throttle(web):
    """Twelve wrong passwords sent at once: at most five are checked, the others get 429."""
    import concurrent.futures

    def guess(_):
        with httpx.Client(base_url=web.url, timeout=60) as c:
            return _login(c, "viewer", "wrong-password!").status_code

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(guess, range(12)))
    assert codes.count(401) <= 5 and codes.count(401) + codes.count(429) == 12, codes


def test_tls_serves_https_with_a_secure_cookie(etcd, prefix, tmp_path, store, keys):
    """With --tls-cert/--tls-key the console is HTTPS only, its cookie is Secure and HSTS is sent."""
    certs = make_certs(tmp_path / "certs")
    Accounts(store, keys).create("admin", Role.ADMIN, "admin-password")
    proc, url, _ = start_web(etcd, prefix, None, tmp_path, "--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key))
    try:
        c = httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=str(certs.ca)), timeout=30)
        r = _login(c, "admin", "admin-password")
        assert r.status_code == 303 and "Secure" in r.headers["set-cookie"]
        assert "max-age" in r.headers["strict-transport-security"]
        with pytest.raises(httpx.HTTPError):
            httpx.get(url.replace("https", "http") + "/login", timeout=5)
    finally:
        stop(proc)


@pytest.mark.parametrize("args, message", [
    (["--tls-cert", "/nonexistent.crt"], "give both --tls-cert and --tls-key"),
    (["--tls-cert", "/nonexistent.crt", "--tls-key", "/nonexistent.key"], "no such file"),
    (["--listen", "nowhere"], "must be HOST:PORT"),
])
def test_bad_web_settings_one_line_exit_2(etcd, prefix, args, message):
    """Bad TLS files or listen address: one error line, exit 2, no server."""
    r = subprocess.run([*cli_command(), "web", "--etcd", etcd, "--prefix", prefix, *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr, r.stderr


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_sessions_expire_when_idle_and_at_their_maximum_age():
    """A session idle longer than the idle limit ends; an active one still ends at the absolute limit."""
    clock = Clock()
    sessions = Sessions(idle=60, maximum=300, clock=clock)
    acct = Account("a", Role.VIEWER, 0.0, 0)
    idle_sid, _ = sessions.create(acct)
    busy_sid, _ = sessions.create(acct)
    for _ in range(4):
        clock.t += 50
        assert sessions.get(busy_sid) is not None
    assert sessions.get(idle_sid) is None  # 200 s without a request
    clock.t += 50
    assert sessions.get(busy_sid) is not None  # 250 s old, active
    clock.t += 51
    assert sessions.get(busy_sid) is None  # 301 s old


def test_throttle_window_and_reset():
    """Five failures lock a name until the oldest ages out of the window; a success clears the name's count."""
    clock = Clock()
    t = Throttle(per_name=5, per_client=20, window=60, clock=clock)
    for _ in range(4):
        t.failed("u", "1.2.3.4")
    assert t.retry_after("u", "1.2.3.4") == 0
    t.failed("u", "1.2.3.4")
    assert t.retry_after("u", "1.2.3.4") == pytest.approx(60)
    assert t.retry_after("other", "5.6.7.8") == 0
    clock.t += 61
    assert t.retry_after("u", "1.2.3.4") == 0
    for _ in range(3):
        t.failed("u", "1.2.3.4")
    t.succeeded("u")
    t.failed("u", "1.2.3.4")
    assert t.retry_after("u", "1.2.3.4") == 0
