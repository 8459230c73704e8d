"""The embedded default MongoDB: a SecantusDB server (a MongoDB wire-protocol server) run as a
separate process, for the quickstart and for tests, when no MongoDB is configured or answering.

SecantusDB is GPL-2.0: we only ever start its ``secantusd-py`` console script as a child process and
talk to it over the wire with pymongo; nothing here imports it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pymongo
import structlog
from pymongo.errors import PyMongoError

from etcdcron.embedded import data_home, free_port

from .errors import MongoUnavailable
from .store import DEFAULT_URI

log = structlog.get_logger("analytics.embedded")

DEFAULT_PORT = 27017


def server_binary() -> str:
    """Path of the ``secantusd-py`` script: next to this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "secantusd-py"
    if beside.exists():
        return str(beside)
    found = shutil.which("secantusd-py")
    if not found:
        raise MongoUnavailable("no MongoDB and no secantusd-py to embed one: pass --mongo URI or install secantusdb")
    return found


def answers(uri: str, timeout: float = 0.5) -> bool:
    """True when a MongoDB server at ``uri`` answers a ping within ``timeout`` seconds."""
    ms = int(timeout * 1000)
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms)
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


class EmbeddedMongo:
    """One SecantusDB server on loopback; ``start()`` returns once pymongo can ping it."""

    def __init__(self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1", log_path: Path | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.host = host
        self.log_path = log_path or self.data_dir.with_suffix(".log")
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "EmbeddedMongo":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        args = [server_binary(), "--host", self.host, "--port", str(self.port), "--storage-path", str(self.data_dir),
                "--log-level", "WARNING"]
        with open(self.log_path, "ab") as logf:
            # Its own session: a Ctrl-C on the terminal reaches our process, which stops the server last.
            self.proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while not answers(self.uri, 0.5):
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-1:]
                raise MongoUnavailable(f"embedded MongoDB (secantusd-py) exited with {self.proc.returncode}: {tail}")
            if time.monotonic() > deadline:
                self.stop()
                raise MongoUnavailable(f"embedded MongoDB (secantusd-py) did not answer on {self.uri} within {timeout:g} s")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def resolve(uri: str | None, embed: bool = True) -> tuple[str, EmbeddedMongo | None]:
    """The MongoDB URI to use: ``uri`` if given; else the default one if a server answers there;
    else (with ``embed``) an embedded server started on the default port, which the caller stops."""
    if uri:
        return uri, None
    if answers(DEFAULT_URI) or not embed:
        return DEFAULT_URI, None
    data = data_home() / "mongo"
    log.warning("mongo.embedded", reason=f"no MongoDB answered at {DEFAULT_URI}", server="secantusd-py (SecantusDB)",
                data_dir=str(data), uri=DEFAULT_URI)
    server = EmbeddedMongo(data, port=DEFAULT_PORT, log_path=data_home() / "mongo.log").start()
    return server.uri, server
