"""Command-line options made from the settings model, and the option groups commands share.

``setting(name)`` gives a ``typer.Option`` whose help, flag and bounds come from
``ConsumerSettings``; its default is ``default(name)``. ``with_redis_options`` adds the four
Redis connection options to a command that takes one ``redis: RedisOptions`` parameter, so
``--redis-url`` and the three TLS files are declared once for every command that talks to
Redis.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import annotated_types
import typer

from consumer.contract import constants as c
from consumer.settings import ConsumerSettings, default, flag

ENVVARS = {"db_path": c.ENV_DB, "redis_url": c.ENV_REDIS_URL}
"""Settings an environment variable may give, when the flag is absent."""


def setting(name: str, *, metavar: str, **extra: Any) -> Any:
    """The option for setting ``name``: its flag, help, environment variable and inclusive
    bounds (typer reports those; pydantic checks the rest, and a breach is exit 2 too)."""
    field = ConsumerSettings.model_fields[name]
    bounds: dict[str, Any] = {}
    for rule in field.metadata:
        if isinstance(rule, annotated_types.Ge):
            bounds["min"] = rule.ge
        elif isinstance(rule, annotated_types.Le):
            bounds["max"] = rule.le
    return typer.Option(
        flag(name),
        help=field.description,
        metavar=metavar,
        envvar=ENVVARS.get(name),
        **bounds,
        **extra,
    )


DbOption = Annotated[str, setting("db_path", metavar="PATH|URL", show_default=True)]
DEFAULT_DB: str = default("db_path")


@dataclass(frozen=True)
class RedisOptions:
    """Where Redis is and how to reach it: ``--redis-url`` and the TLS files."""

    url: str
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def as_settings(self) -> dict[str, object]:
        """These options as ``ConsumerSettings`` fields."""
        return {
            "redis_url": self.url,
            "tls_ca": self.ca,
            "tls_cert": self.cert,
            "tls_key": self.key,
        }


_REDIS_PARAMETERS = (
    ("redis_url", str, setting("redis_url", metavar="URL"), default("redis_url")),
    ("redis_ca", str | None, setting("tls_ca", metavar="FILE"), None),
    ("redis_cert", str | None, setting("tls_cert", metavar="FILE"), None),
    ("redis_key", str | None, setting("tls_key", metavar="FILE"), None),
)

Command = TypeVar("Command", bound=Callable[..., Any])


def with_redis_options(command: Command) -> Command:
    """Give ``command`` the Redis connection options in place of its ``redis`` parameter."""
    signature = inspect.signature(command, eval_str=True)
    kept = [p for p in signature.parameters.values() if p.name != "redis"]
    added = [
        inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=value, annotation=Annotated[kind, option]
        )
        for name, kind, option, value in _REDIS_PARAMETERS
    ]

    @functools.wraps(command)
    def wrapper(**values: Any) -> Any:
        redis = RedisOptions(
            values.pop("redis_url"),
            values.pop("redis_ca"),
            values.pop("redis_cert"),
            values.pop("redis_key"),
        )
        return command(redis=redis, **values)

    parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in kept] + added
    wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
    return wrapper  # type: ignore[return-value]
