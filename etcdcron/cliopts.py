"""Typer glue for the configuration model: ``@configured(GROUP)`` gives a command ``--config`` and the
flags of the settings in :data:`etcdcron.config.GROUPS` ``[GROUP]``, and hands it the resolved
:class:`~etcdcron.config.Config` as its ``cfg`` parameter. Used by ``cli.py`` and the analytics commands.
"""

from __future__ import annotations

import functools
import inspect
from typing import Annotated, Any, Callable, Optional

import typer

from .config import GROUPS, resolve

ConfigFile = Annotated[Optional[str], typer.Option("--config", metavar="FILE", help="TOML configuration file (env ETCDCRON_CONFIG; "
                                                                     "default /etc/etcdcron/etcdcron.toml when present)")]


def configured(group: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command ``--config`` and the flags of the settings in ``GROUPS[group]``; it receives the
    resolved settings as its ``cfg`` parameter. A flag left out is "not given", so the file and the
    environment still speak."""
    settings = GROUPS[group]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != "cfg"]
        extra = [inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=ConfigFile)]
        hints: dict[str, Any] = {"config": ConfigFile}
        for s in settings:
            kind = Optional[bool] if s.is_flag else Optional[list[str]] if s.multiple else Optional[str]
            option = typer.Option(s.flag, help=f"{s.help} [{s.key}, env {s.env}]", show_default=False,
                                  metavar=None if s.is_flag else s.param.upper())
            hints[s.param] = Annotated[kind, option]
            extra.append(inspect.Parameter(s.param, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=hints[s.param]))

        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> Any:
            config = kwargs.pop("config", None)
            flags = {}
            for s in settings:
                value = kwargs.pop(s.param, None)
                if value is not None and value != []:
                    flags[s.key] = value
            return fn(*args, cfg=resolve(flags, config, settings=settings), **kwargs)

        command.__signature__ = sig.replace(parameters=own + extra)  # type: ignore[attr-defined]
        command.__annotations__ = {**{k: v for k, v in fn.__annotations__.items() if k != "cfg"}, **hints}
        return command

    return decorate
