"""The environment of a shell job (DESIGN §3): built from scratch, never a copy of the daemon's.

The daemon's environment holds its secrets (a MongoDB URI with a password, etcd credentials, cloud
keys the host put there). A job's output lands in etcd and in the run history, which more people can
read than the node's environment, and a job may be written by anyone with write access to the
prefix. So a shell job gets, each layer overriding the ones before it:

1. from the daemon: ``PATH`` (:data:`DEFAULT_PATH` when unset), ``HOME``, ``LANG``, ``LC_*`` and
   ``TZ`` — what a command needs to find programs and to format text;
2. the daemon variables the node names (``serve --pass-env NAME``): an operator's explicit choice;
3. the job's own ``--env`` values;
4. the contract: ``ETCDCRON_ARG_*`` of the job's args and the ``ETCDCRON_*`` fields of its firing,
   which nothing overrides (a job cannot be handed a forged fence or slot).
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
INHERITED = ("PATH", "HOME", "LANG", "TZ")  # and every LC_*


def job_environment(fields: Mapping[str, str], args: Mapping[str, str], env: Mapping[str, str],
                    pass_env: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment of one shell run: ``fields`` are the firing's ``ETCDCRON_*`` variables
    (:meth:`RunContext.fields`), ``args`` and ``env`` the job's, ``pass_env`` the names the node lets
    through, ``environ`` the daemon's environment (default ``os.environ``)."""
    daemon = os.environ if environ is None else environ
    out = {k: v for k, v in daemon.items() if k in INHERITED or k.startswith("LC_")}
    out.setdefault("PATH", DEFAULT_PATH)
    out.update({name: daemon[name] for name in pass_env if name in daemon})
    out.update(env)
    out.update({f"ETCDCRON_ARG_{k.upper()}": v for k, v in args.items()})
    out.update(fields)
    return out
