"""Shoal's control plane: scales workers from JetStream backlog, launches them, deploys code."""

from .controller import Controller, ControllerSettings
from .deploy import deploy_file
from .embedded import EmbeddedNats
from .launcher import Launcher, LaunchRequest, ProcessLauncher, WorkerExit

__all__ = [
    "Controller",
    "ControllerSettings",
    "EmbeddedNats",
    "LaunchRequest",
    "Launcher",
    "ProcessLauncher",
    "WorkerExit",
    "deploy_file",
]
