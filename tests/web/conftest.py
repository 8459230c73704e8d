"""Fixtures of the console and API tests: a real ``etcdcron web`` process on the session's etcd (a
prefix of its own) and a fresh MongoDB database, three accounts (admin, operator, viewer) with
passwords and API tokens, node processes on the same prefix, and a real headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from etcdcron.accounts import Accounts, Role
from etcdcron.embedded import free_port
from etcdcron.keys import Keys
from etcdcron.nodes import wait_for
from etcdcron.store import EtcdStore
from etcdcron.testing import Cluster
from etcdcron.testing import cli_command

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"
ROLES = ("admin", "operator", "viewer")


@dataclass
class Web:
    """A running ``etcdcron web`` and what a test needs to talk to it."""

    url: str
    etcd: str
    prefix: str
    mongo_uri: str
    store: EtcdStore
    keys: Keys
    log: Path
    proc: subprocess.Popen
    password: dict[str, str] = field(default_factory=dict)
    token: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """The environment of a CLI subprocess on the same etcd, prefix and MongoDB."""
        return dict(os.environ, ETCDCRON_ETCD=self.etcd, ETCDCRON_PREFIX=self.prefix, ETCDCRON_MONGO=self.mongo_uri)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``etcdcron ARGS`` against the same etcd, prefix and MongoDB."""
        r = subprocess.run([*cli_command(), *args], env=self.env(), capture_output=True, text=True, timeout=120)
        if check and r.returncode != 0:
            raise AssertionError(f"etcdcron {' '.join(args)} exited {r.returncode}: {r.stderr.strip()}")
        return r

    def api(self, role: str | None = None, **kw) -> httpx.Client:
        """An HTTP client of the API (base ``/api/v1``) with the bearer token of ``role`` (None: no credentials)."""
        headers = {"Authorization": f"Bearer {self.token[role]}"} if role else {}
        return httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=30, **kw)


def start_web(etcd: str, prefix: str, mongo_uri: str | None, tmp: Path, *extra: str) -> tuple[subprocess.Popen, str, Path]:
    """Start ``etcdcron web`` on a free loopback port; returns (process, base URL, log path) once it answers."""
    port = free_port()
    log_path = tmp / f"web-{port}.log"
    env = dict(os.environ, ETCDCRON_ETCD=etcd, ETCDCRON_PREFIX=prefix, PYTHONUNBUFFERED="1")
    env.pop("ETCDCRON_MONGO", None)
    args = ["web", "--listen", f"127.0.0.1:{port}", *(["--mongo", mongo_uri] if mongo_uri else []), *extra]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([*cli_command(), *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    scheme = "https" if "--tls-cert" in extra else "http"
    url = f"{scheme}://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"etcdcron web exited {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            return httpx.get(f"{url}/login", timeout=1, verify=False).status_code == 200
        except httpx.HTTPError:
            return False

    assert wait_for(up, 30, step=0.1), f"etcdcron web did not answer: {log_path.read_text()[-2000:]}"
    return proc, url, log_path


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def web(etcd, prefix, mongo_uri, tmp_path, store) -> Web:
    """A real ``etcdcron web`` with accounts admin, operator and viewer (password ``<role>-password``)."""
    keys = Keys(prefix)
    accounts = Accounts(store, keys)
    passwords, tokens = {}, {}
    for role in ROLES:
        passwords[role] = f"{role}-password"
        accounts.create(role, Role(role), passwords[role])
        tokens[role] = accounts.new_token(role)
    proc, url, log_path = start_web(etcd, prefix, mongo_uri, tmp_path)
    w = Web(url, etcd, prefix, mongo_uri, store, keys, log_path, proc, passwords, tokens)
    yield w
    stop(proc)


@pytest.fixture
def web_nodes(web, tmp_path) -> Cluster:
    """Node processes on the web's etcd and prefix, archiving run history to its MongoDB."""
    (tmp_path / "nodes").mkdir(exist_ok=True)
    c = Cluster(web.etcd, web.prefix, tmp_path / "nodes", env={"ETCDCRON_MONGO": web.mongo_uri})
    yield c
    c.close()


def _chromium() -> tuple[str, str]:
    binary = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (Path(binary).exists() and Path(driver).exists()):
        pytest.fail("the browser tests need Debian's chromium and chromium-driver: apt-get install -y chromium "
                    "chromium-driver (.ci/run installs them)")
    return binary, driver


@pytest.fixture
def browser(tmp_path):
    """A real headless Chromium driven by selenium (one per test)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = _chromium()
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(flag)
    d = webdriver.Chrome(options=opts, service=Service(driver, log_output=str(tmp_path / "chromedriver.log")))
    d.set_page_load_timeout(30)
    yield d
    d.quit()


@pytest.fixture
def shot():
    """``shot(browser, name)``: save a full-window screenshot under artifacts/screenshots/ (git-ignored)."""
    SHOTS.mkdir(parents=True, exist_ok=True)

    def take(driver, name: str) -> Path:
        path = SHOTS / f"{name}.png"
        driver.save_screenshot(str(path))
        return path

    return take
