"""How a variable is declared and parsed: :class:`Var`, its kinds of value, :class:`ConfigError`.

The variables themselves are declared in :mod:`runtime.config`; this module only reads the
environment when one of them is asked for its value.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, cast, get_args

from runtime.errors import ShoalError

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)  # a Kind[str] is a Kind[str | None]
Env = Mapping[str, str]


class ConfigError(ShoalError, ValueError):
    """A setting in the environment that cannot be used; the message names the variable,
    the value (never a secret's) and what was expected."""

    code = "config_error"

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(message)
        self.variable = variable


class MissingFile(ConfigError, FileNotFoundError):
    """A variable names a file that is not there."""


@dataclass(frozen=True)
class Kind(Generic[T_co]):
    """A kind of value: ``parse`` turns text into it or raises ValueError."""

    parse: Callable[[str], T_co]
    expected: str  # what a good value looks like, for the error
    error: type[ConfigError] = ConfigError


@dataclass(frozen=True)
class Var(Generic[T_co]):
    """One environment variable, read when :meth:`get` is called (never at import time)."""

    name: str
    kind: Kind[T_co] = field(repr=False)
    default: T_co
    meaning: str
    readers: str  # who reads it
    shown_default: str = ""  # the table's default column, when ``default`` does not say it
    secret: bool = False  # its value is never printed
    keep_empty: bool = False  # "" is a value; otherwise an empty value counts as unset

    def raw(self, env: Env | None = None) -> str | None:
        """The text as set, or None."""
        return (os.environ if env is None else env).get(self.name)

    def is_set(self, env: Env | None = None) -> bool:
        raw = self.raw(env)
        return raw is not None and (self.keep_empty or raw.strip() != "")

    def get(self, env: Env | None = None) -> T_co:
        """The value from ``env`` (default: this process's environment), parsed; the default
        when unset. Raises :class:`ConfigError` for a value that cannot be used."""
        raw = self.raw(env)
        if raw is None or not (self.keep_empty or raw.strip()):
            return self.default
        try:
            return self.kind.parse(raw)
        except ValueError:
            shown = "***" if self.secret else repr(raw)
            message = f"{self.name}={shown} is not {self.kind.expected}"
            raise self.kind.error(self.name, message) from None


VARIABLES: dict[str, Var[Any]] = {}  # every declared variable, by name, in declaration order


def var(name: str, kind: Kind[T], default: T, meaning: str, readers: str, **more: Any) -> Var[T]:
    """Declare a variable."""
    if name in VARIABLES:
        raise ValueError(f"{name} is declared twice")
    declared = Var(name, kind, default, meaning, readers, **more)
    VARIABLES[name] = declared
    return declared


# -- kinds --------------------------------------------------------------------------------


def _text(raw: str) -> str:
    return raw


def _stripped(raw: str) -> str:
    return raw.strip()


def number(low: float, *, above: bool, expected: str) -> Kind[float]:
    """A finite number at least (``above``: more than) ``low``."""

    def parse(raw: str) -> float:
        value = float(raw)
        if not math.isfinite(value) or value < low or (above and value == low):
            raise ValueError(raw)
        return value

    return Kind(parse, expected)


def integer(low: int, expected: str) -> Kind[int]:
    def parse(raw: str) -> int:
        value = int(raw.strip())
        if value < low:
            raise ValueError(raw)
        return value

    return Kind(parse, expected)


def choice(*choices: str, upper: bool = False, expected: str = "") -> Kind[str]:
    def parse(raw: str) -> str:
        value = raw.strip().upper() if upper else raw.strip()
        if value not in choices:
            raise ValueError(raw)
        return value

    return Kind(parse, expected or ", ".join(choices[:-1]) + f" or {choices[-1]}")


def matching(pattern: str, expected: str) -> Kind[str]:
    """Text (stripped) that matches ``pattern`` as a whole."""

    def parse(raw: str) -> str:
        if not re.fullmatch(pattern, raw.strip()):
            raise ValueError(raw)
        return raw.strip()

    return Kind(parse, expected)


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in _TRUE | _FALSE:
        raise ValueError(raw)
    return value in _TRUE


def _file(raw: str) -> Path:
    path = Path(raw).expanduser()
    if not path.is_file():
        raise ValueError(raw)
    return path


@dataclass(frozen=True)
class Mount:
    source: str  # a volume, a host path, or "auto": what the controller's container has there
    target: str  # a path in the container
    mode: str = "rw"


def _mounts(raw: str) -> tuple[Mount, ...]:
    mounts = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        source, _, rest = item.partition(":")
        target, _, mode = rest.partition(":")
        if not source or not target.startswith("/"):
            raise ValueError(item)
        mounts.append(Mount(source, target, mode or "rw"))
    return tuple(mounts)


Adopt = Literal["mine", "all", "none"]


def _adopt(raw: str) -> Adopt:
    if raw.strip() not in get_args(Adopt):
        raise ValueError(raw)
    return cast("Adopt", raw.strip())


_MIB = {"": 1, "k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}
_MEMORY_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_CAPACITY_KEYS = {"cpu": "cpu", "cpus": "cpu", "memory": "memory_mb", "gpus": "gpus", "gpu": "gpus"}


def _capacity(raw: str) -> dict[str, float]:
    """``cpu=8,memory=16g,gpus=1`` (any of them; memory in MiB, or with a k/m/g/t unit) as
    ``{"cpu": 8.0, "memory_mb": 16384.0, "gpus": 1.0}``."""
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, eq, value = (p.strip() for p in item.partition("="))
        name = _CAPACITY_KEYS.get(key.lower())
        if not eq or name is None or name in out:
            raise ValueError(item)
        if name == "memory_mb":
            m = _MEMORY_RE.fullmatch(value)
            if m is None:
                raise ValueError(item)
            out[name] = float(int(float(m[1]) * _MIB[m[2].lower()]))
        elif name == "gpus":
            out[name] = float(int(value))  # a whole number of devices
        else:
            out[name] = float(value)
        if not math.isfinite(out[name]) or out[name] < 0:
            raise ValueError(item)
    return out


TEXT = Kind(_text, "text")
STRIPPED = Kind(_stripped, "text")
SECONDS = number(0, above=True, expected="a number of seconds above 0")
BOOL = Kind(_bool, "a boolean (1/0, true/false, yes/no, on/off)")
PATH = Kind(lambda raw: Path(raw).expanduser(), "a path")
FILE = Kind(_file, "the path of a file that exists", MissingFile)
MOUNTS = Kind(_mounts, "source:/container/path[:mode],...")
ADOPT = Kind(_adopt, "mine, all or none")
CAPACITY = Kind(_capacity, "cpu=N,memory=N[k|m|g|t],gpus=N (any of them, none negative)")


def markdown_table() -> str:
    """The table of docs/configuration.md: every declared variable."""
    rows = ["| variable | default | meaning | read by |", "|---|---|---|---|"]
    for v in VARIABLES.values():
        rows.append(
            f"| `{v.name}` | {v.shown_default or _shown(v.default)} | {v.meaning} | {v.readers} |"
        )
    return "\n".join(rows) + "\n"


def _shown(default: object) -> str:
    if default is None or default == ():
        return "-"
    if isinstance(default, bool):
        return "`1`" if default else "`0`"
    return f"`{default:g}`" if isinstance(default, float) else f"`{default}`"
