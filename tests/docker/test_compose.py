"""compose.yaml as shipped, alone (no override file), with the stand-ins docker/build.sh tags
as the upstream nats and SeaweedFS images: `up -d` waits for the healthchecks, every example
in functions/ is deployed and invoked with the commands and credentials docs/containers.md
gives, its workers run as containers of the project, an anonymous client is refused, and
`down -v --remove-orphans` leaves no container, network or volume of the project. Also: the
events JetStream stored survive `down` and `up` (the named volumes stay)."""

from __future__ import annotations

import base64
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import wave
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import ServiceUnavailableError

from controller.docker_args import LABEL_WORKER
from runtime import Client
from runtime.errors import FunctionNotFound, WorkerUnavailable
from runtime.wire import protocol
from runtime.wire.connection import NatsAuth, NatsRefused, connect
from storage import ObjectStore, S3Settings, StorageAccessDenied

from .conftest import REPO, compose_image, ensure_images

if TYPE_CHECKING:
    from collections.abc import Iterator

    from nats.aio.client import Client as NATS

pytestmark = pytest.mark.anyio

IMAGES = (
    compose_image("nats"),
    compose_image("s3"),
    "shoal-controller",
    "shoal-handler",
    "shoal-executor",
)
PORTS = (4222, 8222, 8333, 9464)  # 9464: the controller's status page and /metrics
URL = "nats://127.0.0.1:4222"
COMPOSE_TIMEOUT = 300.0  # seconds for one compose command (up builds nothing: images exist)
GRACE = "10"  # `down -t`: every service stops on SIGTERM (weed under init), well within it
EXAMPLES = ("echo", "textstats", "embed", "vad", "radixnet", "embed_staged")
SPEECH = REPO / "tests" / "models" / "data" / "speech.wav"

# The roles of deploy/nats/nats-server.conf with compose.yaml's development passwords, as
# docs/containers.md writes them: the controller role deploys, the client role invokes.
OPERATOR = NatsAuth(user="shoal-controller", password="controller-dev-secret")
APP = NatsAuth(
    user="shoal-client", password="client-dev-secret", inbox_prefix="_INBOX.shoal-client"
)
DEPLOY_ENV = {"SHOAL_NATS_USER": "shoal-controller", "SHOAL_NATS_PASSWORD": "controller-dev-secret"}
CLIENT_ENV = {
    "SHOAL_NATS_USER": "shoal-client",
    "SHOAL_NATS_PASSWORD": "client-dev-secret",
    "SHOAL_NATS_INBOX_PREFIX": "_INBOX.shoal-client",
}


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Compose:
    """One throwaway compose project over compose.yaml alone."""

    cmd: list[str]
    project: str

    def run_sync(self, *args: str) -> str:
        done = subprocess.run(
            [*self.cmd, *args], cwd=REPO, capture_output=True, text=True, timeout=COMPOSE_TIMEOUT
        )
        assert done.returncode == 0, f"compose {' '.join(args)}: {done.stderr[-3000:]}"
        return done.stdout + done.stderr

    async def run(self, *args: str) -> None:
        with anyio.fail_after(COMPOSE_TIMEOUT):
            done = await anyio.run_process([*self.cmd, *args], cwd=REPO, check=False)
        assert done.returncode == 0, f"compose {' '.join(args)}: {done.stderr.decode()[-3000:]}"

    def leftovers(self, client: Any) -> dict[str, list[str]]:
        """The project's containers, networks and volumes still on the engine."""
        label = {"label": f"com.docker.compose.project={self.project}"}
        return {
            "containers": [c.name for c in client.containers.list(all=True, filters=label)],
            "networks": [n.name for n in client.networks.list(filters=label)],
            "volumes": [v.name for v in client.volumes.list(filters=label)],
        }


@pytest.fixture
def compose(docker_client: Any) -> Iterator[Compose]:
    exe = shutil.which("docker-compose")
    base = [exe] if exe else ["docker", "compose"]
    if subprocess.run([*base, "version"], capture_output=True).returncode != 0:
        pytest.skip(
            "neither docker-compose nor the compose plugin is installed: "
            "run docker/ensure-engine.sh (installs docker-compose; needs root)"
        )
    ensure_images(docker_client, *IMAGES)
    busy = [p for p in PORTS if _port_busy(p)]
    if busy:
        pytest.skip(f"ports {busy} are taken (another compose stack running?)")
    project = "shoaltest" + uuid.uuid4().hex[:6]
    stack = Compose([*base, "-p", project], project)
    try:
        stack.run_sync("up", "-d")  # returns once nats and s3 are healthy and s3-init done
        yield stack
    finally:  # everything goes, workers (orphans of the project) included
        subprocess.run(
            [*stack.cmd, "down", "-v", "--remove-orphans", "-t", GRACE],
            cwd=REPO,
            capture_output=True,
            timeout=COMPOSE_TIMEOUT,
        )


def _shoal(*args: str, env: dict[str, str], timeout: float = 240.0) -> str:
    """The `shoal` command line from the host, as docs/containers.md writes it."""
    exe = Path(sys.executable).parent / "shoal"
    cmd = (
        [str(exe)]
        if exe.exists()
        else [sys.executable, "-c", "from controller.cli import main; main()"]
    )
    done = subprocess.run(
        [*cmd, *args],
        cwd=REPO,
        env={**os.environ, "SHOAL_NATS_URL": URL, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"shoal {' '.join(args)[:200]}: {done.stdout}{done.stderr}"
    return done.stdout


def _invoke(function: str, event: Any) -> Any:
    """`shoal invoke` as the client role; the first call may wait out a cold start."""
    out = _shoal("invoke", function, json.dumps(event), "--timeout", "180", env=CLIENT_ENV)
    return json.loads(out.strip().splitlines()[-1])


async def _connect(auth: NatsAuth = OPERATOR) -> NATS:
    """The operator's view (streams, results) unless told otherwise."""
    with anyio.fail_after(30):
        return await connect(URL, name="compose-test", auth=auth)  # retries while NATS starts


def _connz() -> Any:
    """The server's connections, with the user each authenticated as (monitoring port)."""
    with urllib.request.urlopen("http://127.0.0.1:8222/connz?auth=1&limit=1024", timeout=10) as r:
        return json.load(r)


async def _call_echo(client: Client, event: Any) -> Any:
    """compose's `deploy` job deploys ./functions once NATS is healthy."""
    with anyio.fail_after(90):
        while True:
            try:
                return await client.call("echo", event, timeout=30)
            except (FunctionNotFound, WorkerUnavailable):
                await anyio.sleep(0.5)


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


async def test_compose_serves_every_example(compose: Compose, docker_client: Any) -> None:
    timings: dict[str, float] = {}
    # Deploying from the host: the controller role (the client role may not write functions).
    files = [str(Path("functions") / f"{name}.py") for name in EXAMPLES]
    deployed = await anyio.to_thread.run_sync(lambda: _shoal("deploy", *files, env=DEPLOY_ENV))
    for name in EXAMPLES:
        assert f"deployed {name} " in deployed, deployed

    async def invoke(function: str, event: Any) -> Any:
        t0 = time.monotonic()
        answer = await anyio.to_thread.run_sync(_invoke, function, event)
        timings[function] = time.monotonic() - t0
        return answer

    assert await invoke("echo", {"text": "hi"}) == {"text": "hi"}
    stats = await invoke("textstats", {"text": "Shoal serves models. Models answer events."})
    assert stats["words"] == 6 and stats["sentences"] == 2, stats
    assert stats["keywords"][0] == ["models", 2], stats

    # embed: a handler container (shoal-handler) and a MiniLM executor (shoal-executor).
    texts = ["a cat sat on the mat", "stocks fell"]
    embeddings = (await invoke("embed", {"texts": texts}))["embeddings"]
    assert [len(v) for v in embeddings] == [384, 384]
    assert all(abs(math.hypot(*v) - 1) < 1e-3 for v in embeddings)  # normalized
    assert _cosine(embeddings[0], embeddings[1]) < 0.5  # unrelated texts

    # embed_staged: the same model as three partitioned stages; the same vector as embed's.
    staged = (await invoke("embed_staged", {"text": texts[0]}))["embedding"]
    assert _cosine(staged, embeddings[0]) > 0.999

    # radixnet: four partitions in four containers; the answer equals the monolithic reference.
    from functions.radixnet import reference

    event = {"neurons": 1024, "layers": 120, "batch": 64, "seed": 0, "partitions": 4}
    answer = await invoke("radixnet", event)
    expected = reference(1024, 120, 64, 0)
    assert answer["categories"] == expected["categories"]
    assert answer["checksum"] == pytest.approx(expected["checksum"], rel=1e-9)

    # vad: a WAV as base64 in JSON (msgpack carries bytes natively; the CLI speaks JSON).
    wav = SPEECH.read_bytes()
    vad = await invoke("vad", {"audio_b64": base64.b64encode(wav).decode()})
    with wave.open(str(SPEECH)) as w:
        seconds = w.getnframes() / w.getframerate()
    assert vad["duration"] == pytest.approx(seconds, abs=1e-3)
    segments = vad["speech"]
    assert len(segments) >= 2, vad  # the recording has two utterances
    flat = [t for seg in segments for t in seg]
    assert flat == sorted(flat) and 0 <= flat[0] and flat[-1] <= vad["duration"], vad

    # Every worker is a container labelled with this project (so `down` removes it), and
    # connects under the worker role.
    workers = docker_client.containers.list(
        filters={"label": [LABEL_WORKER, f"com.docker.compose.project={compose.project}"]}
    )
    images = {c.image.tags[0] if c.image.tags else c.image.id for c in workers}
    assert {"shoal-handler:latest", "shoal-executor:latest"} <= images, images
    functions = {c.labels["shoal.function"] for c in workers}
    assert {"embed", "minilm", "vad", "silero-vad"} <= functions, functions
    connz = await anyio.to_thread.run_sync(_connz)
    users = {(c.get("name", ""), c.get("authorized_user", "")) for c in connz["connections"]}
    assert {u for n, u in users if n.startswith("shoal-worker-")} == {"shoal-worker"}, users

    # Without credentials, nothing: neither NATS nor the S3 store.
    with anyio.fail_after(30), pytest.raises(NatsRefused, match="Authorization Violation"):
        await connect(URL, name="anonymous", auth=NatsAuth())
    await anyio.to_thread.run_sync(_s3_refuses_strangers)

    # down -v --remove-orphans: the workers, the network and the volumes go too.
    t0 = time.monotonic()
    await compose.run("down", "-v", "--remove-orphans", "-t", GRACE)
    timings["down"] = time.monotonic() - t0
    assert compose.leftovers(docker_client) == {"containers": [], "networks": [], "volumes": []}
    assert not [c.name for c in workers if _exists(docker_client, c.id)]
    print("compose timings (s):", {k: round(v, 1) for k, v in timings.items()})


def _s3_refuses_strangers() -> None:
    """compose.yaml's S3 server answers neither anonymous requests nor a wrong secret."""
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen("http://127.0.0.1:8333/shoal/", timeout=10)
    refused.value.close()  # the error carries the response (its socket)
    assert refused.value.code == 403
    wrong = S3Settings(endpoint="127.0.0.1:8333", access_key="shoal", secret_key="wrong")
    with pytest.raises(StorageAccessDenied):
        ObjectStore(replace(wrong, max_retries=0)).put_bytes("anonymous", b"x")


def _exists(client: Any, container_id: str) -> bool:
    try:
        client.containers.get(container_id)
        return True
    except Exception:
        return False


async def test_compose_down_and_up_keeps_stored_events(
    compose: Compose, docker_client: Any
) -> None:
    stream = protocol.stream_name("echo")
    run = uuid.uuid4().hex[:8]
    events = {f"kept-{run}-{n}": {"n": n, "run": run} for n in range(5)}
    nc = await _connect()
    try:
        await _call_echo(Client(nc), {"warm": True})  # deployed: echo's stream exists
        # No controller and no worker (workers outlive a stopped controller, to be adopted):
        # what is published now can only wait in JetStream.
        await compose.run("stop", "-t", "10", "controller")
        for c in docker_client.containers.list(
            filters={"label": [LABEL_WORKER, f"com.docker.compose.project={compose.project}"]}
        ):
            c.remove(force=True)
        js = nc.jetstream()
        before = (await js.stream_info(stream)).state.messages  # 0, or an unacked warm-up
        client = Client(nc)
        for rid, event in events.items():
            await client.publish("echo", event, request_id=rid)
        assert (await js.stream_info(stream)).state.messages == before + len(events)
    finally:
        await nc.close()

    await compose.run("down", "-t", GRACE)  # without -v: the named volumes stay
    await compose.run("up", "-d", "nats")  # NATS alone first: nothing consumes the events
    nc = await _connect()
    try:
        js = nc.jetstream()
        with anyio.fail_after(30):
            while True:  # JetStream answers once it has recovered its streams
                try:
                    info = await js.stream_info(stream)
                    break
                except (NoRespondersError, ServiceUnavailableError, NatsTimeout):
                    await anyio.sleep(0.2)
        assert info.state.messages == before + len(events)
        state = info.state
        stored = {}
        for seq in range(state.first_seq, state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            stored[(msg.headers or {}).get(protocol.MSG_ID)] = json.loads(msg.data or b"")
        assert {rid: stored.get(rid) for rid in events} == events

        # The whole stack again: the controller serves the events that waited.
        await compose.run("up", "-d")
        client = Client(nc)
        for rid, event in events.items():
            assert (await client.wait_result(rid, timeout=90)).unwrap() == event
        with anyio.fail_after(30):  # each acked once its result is stored: gone
            while (await js.stream_info(stream)).state.messages:  # noqa: ASYNC110
                await anyio.sleep(0.2)
    finally:
        await nc.close()
