"""Shoal's runtime: what a function author imports, and what runs inside a worker.

>>> from runtime import function
>>> @function
... def echo(event):
...     return event
"""

from importlib.metadata import PackageNotFoundError, version

from .client import Client
from .context import Context
from .decorator import executor, function
from .errors import (
    DefinitionError,
    DeployError,
    ExecutorUnavailable,
    FunctionError,
    FunctionNotFound,
    FunctionTimeout,
    IntermediateStoreError,
    InvalidPayload,
    ModelTooLarge,
    PartitionLost,
    ResultNotFound,
    ResultNotSerializable,
    ShoalError,
    WorkerUnavailable,
)
from .partitioned import Plan, partitioned
from .results import Result
from .shard import Shard

try:  # the installed distribution's version: pyproject.toml is the one place it is written
    __version__ = version("shoal")
except PackageNotFoundError:  # a source checkout that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Client",
    "Context",
    "DefinitionError",
    "DeployError",
    "ExecutorUnavailable",
    "FunctionError",
    "FunctionNotFound",
    "FunctionTimeout",
    "IntermediateStoreError",
    "InvalidPayload",
    "ModelTooLarge",
    "PartitionLost",
    "Plan",
    "Result",
    "ResultNotFound",
    "ResultNotSerializable",
    "Shard",
    "ShoalError",
    "WorkerUnavailable",
    "executor",
    "function",
    "partitioned",
]
