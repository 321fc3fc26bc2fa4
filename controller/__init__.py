"""Shoal's control plane: scales workers from JetStream backlog, launches them, deploys code."""

from .controller import Controller, ControllerSettings
from .deploy import deploy_file
from .docker_launcher import DockerLauncher
from .embedded import EmbeddedNats
from .launcher import Launcher, LaunchRequest, ProcessLauncher, WorkerExit

__all__ = [
    "Controller",
    "ControllerSettings",
    "DockerLauncher",
    "EmbeddedNats",
    "LaunchRequest",
    "Launcher",
    "ProcessLauncher",
    "WorkerExit",
    "deploy_file",
]
