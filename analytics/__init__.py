"""Mobile-app analytics on etcdcron (DESIGN §6): a collector, five builtin jobs, seed and report.

    events.py     apps and events: model, validation, the two signature schemes, the insert-path check
    collector.py  the ASGI collector (Starlette on uvicorn), batched writes
    store.py      the MongoDB adapter: collections, indexes, the fenced write, error mapping
    days.py       local days of an app's zone: boundaries, closed, final
    metrics.py    the metric arithmetic, pure
    jobs.py       the builtin jobs rollup, active_users, retention, usage, purge
    seed.py       synthetic events; report.py: the metrics as tables
    embedded.py   a SecantusDB server process as the embedded default MongoDB
    cli.py        `collect`, `apps`, `analytics` commands; errors.py: this package's errors
"""
