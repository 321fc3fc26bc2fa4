"""The launch contract (runtime.launch.LaunchEnv): what the controller and a launcher write is
what the worker reads back."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller import ControllerSettings
from controller.docker_launcher import DockerLauncher
from controller.launcher import LaunchRequest
from runtime import config
from runtime.config import ConfigError
from runtime.launch import CREDENTIALS, STORAGE, LaunchEnv
from runtime.wire.connection import connect, passed_on, servers
from runtime.worker.serving import WorkerSettings

if TYPE_CHECKING:
    from controller import EmbeddedNats

REPO = Path(__file__).parent.parent

# Values as a launcher writes them: non-empty, no surrounding blanks, no control characters.
text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1).filter(
    lambda s: s == s.strip()
)
seconds = st.floats(min_value=0, exclude_min=True, allow_nan=False, allow_infinity=False)
raw = st.text(st.characters(blacklist_categories=("Cs", "Cc")))  # passed on as they are
launch_envs = st.builds(
    LaunchEnv,
    function=st.none() | text,
    worker_id=st.none() | text,
    nats_url=st.none() | text,
    controller_id=st.none() | text,
    code_dir=st.none() | text.filter(lambda s: not s.startswith("~")).map(Path),
    parent_pid=st.none() | st.integers(min_value=1),
    spawned_at=st.none() | st.floats(min_value=0, allow_nan=False, allow_infinity=False),
    heartbeat=st.none() | seconds,
    log_level=st.none() | st.sampled_from(["DEBUG", "INFO", "WARNING", "ERROR"]),
    results_ttl=st.none() | seconds,
    credentials=st.dictionaries(st.sampled_from(sorted(CREDENTIALS)), raw),
    storage=st.dictionaries(st.sampled_from(sorted(STORAGE)), raw),
)


@given(launch_envs)
def test_what_is_written_is_read_back(launch: LaunchEnv) -> None:
    env = launch.to_env()
    assert all(isinstance(v, str) for v in env.values())
    assert LaunchEnv.from_env(env) == launch


def test_unset_fields_write_nothing_and_read_back_as_unset() -> None:
    assert LaunchEnv().to_env() == {}
    assert LaunchEnv.from_env({}) == LaunchEnv()
    assert LaunchEnv(function="echo", worker_id="w1").to_env() == {
        "SHOAL_FUNCTION": "echo",
        "SHOAL_WORKER_ID": "w1",
    }


def test_the_contract_is_carried_by_declared_variables() -> None:
    full = LaunchEnv(
        function="f",
        worker_id="w",
        nats_url="nats://n:4222",
        controller_id="c",
        code_dir=Path("/code"),
        parent_pid=7,
        spawned_at=1.5,
        heartbeat=0.2,
        log_level="INFO",
        results_ttl=60.0,
    )
    assert set(full.to_env()) <= set(config.VARIABLES)
    with pytest.raises(ValueError, match="takes"):
        LaunchEnv(credentials={"SHOAL_WORKER_NATS_USER": "w"})  # the controller's name


def test_a_bad_value_is_named() -> None:
    with pytest.raises(ConfigError, match="SHOAL_PARENT_PID='me' is not a process id"):
        LaunchEnv.from_env({"SHOAL_FUNCTION": "f", "SHOAL_PARENT_PID": "me"})


def test_the_worker_settings_come_from_the_contract() -> None:
    launch = LaunchEnv(function="echo", worker_id="w1", heartbeat=0.2, parent_pid=9)
    settings = WorkerSettings.from_env(launch.to_env())
    assert (settings.function, settings.worker_id, settings.heartbeat) == ("echo", "w1", 0.2)
    assert settings.parent_pid == 9 and settings.nats_url == config.DEFAULT_NATS_URL
    assert settings.code_dir == Path(".shoal/code") and settings.controller_id == ""
    assert len(WorkerSettings.from_env({"SHOAL_FUNCTION": "echo"}).worker_id) == 12
    with pytest.raises(ConfigError, match="SHOAL_FUNCTION is not set"):
        WorkerSettings.from_env({})


def test_the_controller_gives_workers_their_own_credentials() -> None:
    env = {
        "SHOAL_WORKER_NATS_USER": "worker",
        "SHOAL_WORKER_NATS_PASSWORD": "pw",
        "SHOAL_TICK": "2",
    }
    settings = ControllerSettings.from_env(env, stale_after=9.0)
    assert settings.tick == 2.0 and settings.stale_after == 9.0
    assert LaunchEnv.from_env(settings.worker_env).credentials == {
        "SHOAL_NATS_USER": "worker",
        "SHOAL_NATS_PASSWORD": "pw",
    }
    assert len(ControllerSettings.from_env({}).controller_id) == 12
    assert ControllerSettings.from_env({"SHOAL_CONTROLLER_ID": "c7"}).controller_id == "c7"


def test_a_container_gets_the_contract_and_the_controllers_inherited_settings() -> None:
    controller_env = {
        "SHOAL_LOG_LEVEL": "warning",
        "SHOAL_HEARTBEAT": "0.5",
        "SHOAL_S3_ENDPOINT": "s3:8333",
        "SHOAL_NATS_PASSWORD": "controller-secret",  # never a worker's
        "SHOAL_TICK": "0.1",  # the controller's own
    }
    launcher = DockerLauncher(controller_id="c1", env=LaunchEnv.inherited(controller_env).to_env())
    try:
        request = LaunchRequest(
            "echo", "w1", "v1", LaunchEnv(nats_url="nats://nats:4222", controller_id="c1").to_env()
        )
        launched = LaunchEnv.from_env(launcher.run_kwargs(request)["environment"])
    finally:
        launcher.exits.close()
        launcher._send.close()
    assert launched.function == "echo" and launched.worker_id == "w1"
    assert launched.nats_url == "nats://nats:4222" and launched.controller_id == "c1"
    assert launched.spawned_at is not None and launched.parent_pid is None
    assert launched.log_level == "WARNING" and launched.heartbeat == 0.5
    assert launched.storage == {"SHOAL_S3_ENDPOINT": "s3:8333"} and launched.credentials == {}


def test_a_bad_request_setting_is_no_longer_ignored() -> None:
    launcher = DockerLauncher(controller_id="c1")
    try:
        request = LaunchRequest("echo", "w1", "v1", {"SHOAL_MEMORY_MB": "lots"})
        with pytest.raises(ConfigError, match="SHOAL_MEMORY_MB='lots'"):
            launcher.run_kwargs(request)
    finally:
        launcher.exits.close()
        launcher._send.close()


def test_a_worker_with_an_unusable_launch_setting_says_so_in_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env.update(PYTHONPATH=str(REPO), SHOAL_FUNCTION="echo", SHOAL_HEARTBEAT="often")
    done = subprocess.run(
        [sys.executable, "-m", "runtime.worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "shoal worker: error: SHOAL_HEARTBEAT='often' is not a number of seconds above 0"
    ]


@pytest.mark.anyio
async def test_workers_are_given_every_configured_server_the_one_reached_first(
    nats_server: EmbeddedNats,
) -> None:
    """A controller configured with several servers passes them all on to its workers (the
    one it reached first), so a worker starts even while one of them is down."""
    with socket.socket() as s:  # a port nothing listens on: a server that is down
        s.bind(("127.0.0.1", 0))
        down = f"nats://127.0.0.1:{s.getsockname()[1]}"
    nc = await connect(f"{down},{nats_server.url}", name="several")
    try:
        assert servers(passed_on(nc, "unused")) == [nats_server.url, down]
    finally:
        await nc.close()
