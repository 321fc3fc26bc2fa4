"""A host's capacity and what a worker takes of it (docs/placement.md).

Each controller runs on one host and starts workers only there. It declares the host's
capacity (``--capacity``, ``SHOAL_CAPACITY``; what is left out is read from the machine) and
announces it, with what its workers take, in its heartbeat entry in KV ``shoal_controllers``.
Placement (:mod:`controller.placement`) fits each function's workers into those capacities.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime import config

if TYPE_CHECKING:
    from collections.abc import Mapping

    from runtime.wire.spec import FunctionSpec

NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one folder per GPU the driver sees
# The GPUs a worker may use, in its launch request's environment: CUDA reads it in a process
# worker; the container launcher turns it into the container's devices.
CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True, order=True)
class Amount:
    """CPUs, memory (MiB) and GPUs: a host's capacity, or what a worker takes of one."""

    cpu: float = 0.0
    memory_mb: int = 0
    gpus: int = 0

    def __add__(self, other: Amount) -> Amount:
        return Amount(
            self.cpu + other.cpu, self.memory_mb + other.memory_mb, self.gpus + other.gpus
        )

    def times(self, n: int) -> Amount:
        return Amount(self.cpu * n, self.memory_mb * n, self.gpus * n)

    def within(self, capacity: Amount) -> bool:
        """Whether this much fits in ``capacity``, each resource on its own."""
        return (
            self.cpu <= capacity.cpu + 1e-9
            and self.memory_mb <= capacity.memory_mb
            and self.gpus <= capacity.gpus
        )

    def to_dict(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "memory_mb": self.memory_mb, "gpus": self.gpus}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Amount:
        return cls(float(d.get("cpu", 0.0)), int(d.get("memory_mb", 0)), int(d.get("gpus", 0)))


def need_of(spec: FunctionSpec) -> Amount:
    """What one worker of ``spec`` takes of its host: its GPUs (``gpu``) and its model's
    memory (``memory_mb``, else what a partitioned model lets one worker hold). No option
    declares CPUs, so a worker takes none of the declared ``cpu``: it is shown, not fitted."""
    return Amount(0.0, spec.memory_mb or spec.worker_memory_mb, spec.gpu)


def machine_gpus() -> int:
    """NVIDIA GPUs on this machine: the driver's list, else ``nvidia-smi -L``'s (0 without
    either). The controller does not load CUDA to ask, as a worker does."""
    try:
        return sum(1 for _ in NVIDIA_GPUS.iterdir())
    except OSError:
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in listed.stdout.splitlines() if line.startswith("GPU "))


def machine_capacity() -> Amount:
    """This machine's CPUs, total memory and GPUs."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    except (OSError, ValueError):
        memory = 0
    return Amount(float(os.cpu_count() or 1), int(memory), machine_gpus())


def capacity(declared: Mapping[str, float], machine: Amount | None = None) -> Amount:
    """The declared capacity (:data:`runtime.config.HOST_CAPACITY`'s form), with what it
    leaves out read from the machine (GPUs are counted only when needed)."""
    if {"cpu", "memory_mb", "gpus"} <= declared.keys():
        return Amount(declared["cpu"], int(declared["memory_mb"]), int(declared["gpus"]))
    m = machine or machine_capacity()
    return Amount(
        declared.get("cpu", m.cpu),
        int(declared.get("memory_mb", m.memory_mb)),
        int(declared.get("gpus", m.gpus)),
    )


def parse_capacity(raw: str, option: str = "--capacity") -> dict[str, float]:
    """``cpu=..,memory=..,gpus=..`` as given to ``option``; a bad one is a
    :class:`~runtime.config.ConfigError` that names the option."""
    try:
        return config.CAPACITY.parse(raw)
    except ValueError:
        message = f"{option}={raw!r} is not {config.CAPACITY.expected}"
        raise config.ConfigError(option, message) from None


def host_name(env: config.Env | None = None) -> str:
    """``SHOAL_HOST_NAME``, else the machine's host name."""
    return config.HOST_NAME.get(env) or socket.gethostname()
