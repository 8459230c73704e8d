"""A MongoDB wire-protocol server for tests: SecantusDB's ``secantusd-py`` as a separate process.

    server = MongoServer(tmp_dir).start()   # a free loopback port, data under tmp_dir
    client = pymongo.MongoClient(server.uri)
    server.stop()

SecantusDB is GPL-2.0: tests start it as a process and never import it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from etcdcron.analytics.embedded import EmbeddedMongo


class MongoServer:
    """One server process; ``uri`` has no database, :meth:`database_uri` names a fresh one."""

    def __init__(self, tmp_dir: Path | str, port: int | None = None) -> None:
        base = Path(tmp_dir)
        self._server = EmbeddedMongo(base / "mongo-data", port=port, log_path=base / "mongo.log")

    @property
    def uri(self) -> str:
        return self._server.uri

    @property
    def log_path(self) -> Path:
        return self._server.log_path

    def database_uri(self, name: str | None = None) -> str:
        """The URI of a database of its own (default: a new random name), for test isolation."""
        return f"{self.uri}/{name or 't_' + uuid.uuid4().hex[:12]}"

    def start(self, timeout: float = 30.0) -> "MongoServer":
        self._server.start(timeout)
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> "MongoServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
