"""Shoal's runtime: what a function author imports, and what runs inside a worker.

>>> from runtime import function
>>> @function
... def echo(event):
...     return event
"""

from importlib.metadata import PackageNotFoundError, version

from runtime.client import Client
from runtime.config.var import ConfigError
from runtime.context import Context
from runtime.define.decorator import executor, function
from runtime.define.handles import Executor, uses
from runtime.define.partitioned import Plan, partitioned
from runtime.errors import (
    Cancelled,
    DefinitionError,
    DeliveryExhausted,
    DeployError,
    ExecutorUnavailable,
    FunctionError,
    FunctionNotFound,
    FunctionTimeout,
    IntermediateStoreError,
    InvalidPayload,
    ModelTooLarge,
    PartitionLost,
    PayloadTooLarge,
    Reject,
    ResultNotFound,
    ResultNotSerializable,
    Retry,
    ShoalError,
    WorkerUnavailable,
)
from runtime.partition.shard import Shard
from runtime.wire.results import Result

try:  # the installed distribution's version: pyproject.toml is the one place it is written
    __version__ = version("shoal")
except PackageNotFoundError:  # a source checkout that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Cancelled",
    "Client",
    "ConfigError",
    "Context",
    "DefinitionError",
    "DeliveryExhausted",
    "DeployError",
    "Executor",
    "ExecutorUnavailable",
    "FunctionError",
    "FunctionNotFound",
    "FunctionTimeout",
    "IntermediateStoreError",
    "InvalidPayload",
    "ModelTooLarge",
    "PartitionLost",
    "PayloadTooLarge",
    "Plan",
    "Reject",
    "Result",
    "ResultNotFound",
    "ResultNotSerializable",
    "Retry",
    "Shard",
    "ShoalError",
    "WorkerUnavailable",
    "executor",
    "function",
    "partitioned",
    "uses",
]
