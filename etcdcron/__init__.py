"""etcdcron: a cron daemon for a fleet, exactly one run per firing, coordinated through etcd."""

__version__ = "0.1.0"
