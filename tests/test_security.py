"""Authentication, TLS and role permissions, against a real nats-server running the example
configuration in deploy/nats/ with a controller and process workers under their roles."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import msgpack
import nats.errors
import nats.js.errors
import pytest

from controller import Controller, ControllerSettings, EmbeddedNats, ProcessLauncher, deploy_file
from runtime import Client
from runtime.bundles.store import kv_limit
from runtime.wire import logstream, protocol
from runtime.wire.connection import NatsAuth, NatsRefused, connect, kv
from tests.conftest import FAST, FNS, FUNCTIONS, controller_settings
from tests.test_bundles import BIG, write
from tests.test_cli import Exit, ashoal

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from nats.aio.client import Client as NATS

pytestmark = pytest.mark.anyio

DEPLOY = Path(__file__).parent.parent / "deploy" / "nats"
ROLES = ("controller", "worker", "client")
CLIENT_INBOX = "_INBOX.shoal-client"  # the client role may read replies under this only


@dataclass(frozen=True)
class Tls:
    ca: Path
    cert: Path  # the server's, for 127.0.0.1 and localhost
    key: Path
    client_cert: Path  # a client's, for servers that verify clients
    client_key: Path


def make_tls(folder: Path) -> Tls:
    """A CA, and the server and client certificates it signs."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shoal test CA")])

    def issue(cn: str, key: Any, issuer: x509.Name, extensions: list[Any]) -> bytes:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        for ext, critical in extensions:
            builder = builder.add_extension(ext, critical=critical)
        return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def private(key: Any) -> bytes:
        return key.private_bytes(  # type: ignore[no-any-return]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    ca_usage = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
    tls = Tls(*(folder / f for f in ("ca.pem", "server.pem", "server.key", "app.pem", "app.key")))
    tls.ca.write_bytes(
        issue(
            "shoal test CA",
            ca_key,
            ca_name,
            [
                (x509.BasicConstraints(ca=True, path_length=None), True),
                (ca_usage, True),
                (ca_ski, False),
            ],
        )
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server_usage = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    tls.cert.write_bytes(
        issue(
            "127.0.0.1",
            server_key,
            ca_name,
            [(x509.SubjectAlternativeName(names), False), (server_usage, False), (aki, False)],
        )
    )
    tls.key.write_bytes(private(server_key))
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_usage = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    tls.client_cert.write_bytes(
        issue("app", client_key, ca_name, [(client_usage, False), (aki, False)])
    )
    tls.client_key.write_bytes(private(client_key))
    return tls


@dataclass
class Secured:
    """A nats-server running deploy/nats/nats-server.conf, with TLS or without."""

    server: EmbeddedNats
    passwords: dict[str, str]
    tls: Tls | None

    @property
    def url(self) -> str:
        return self.server.url.replace("nats://", "tls://") if self.tls else self.server.url

    def auth(self, role: str, **more: Any) -> NatsAuth:
        more.setdefault("tls_ca", self.tls.ca if self.tls else None)
        return NatsAuth(user=f"shoal-{role}", password=self.passwords[role], **more)

    async def connect(self, role: str, **options: Any) -> NATS:
        prefix = {"inbox_prefix": CLIENT_INBOX} if role == "client" else {}
        return await connect(
            self.url, name=f"test-{role}", auth=self.auth(role, **prefix), **options
        )

    async def violations(self, nc: NATS) -> list[str]:
        """Every operation the server refused so far: ``nc`` (a client) is refused one more
        whose log line, once read, shows that all earlier lines are read too."""
        await nc.subscribe("shoal.sentinel")
        await anyio.to_thread.run_sync(self.server.wait_for_log, '"shoal.sentinel"', 10)
        lines = [line for line in self.server.lines if "Violation" in line]
        return [line for line in lines if '"shoal.sentinel"' not in line]

    def users(self) -> set[tuple[str, str]]:
        """(connection name, authenticated user) of every client, from the monitoring port."""
        line = self.server.wait_for_log("Starting http monitor on")
        monitor = line.rsplit(" ", 1)[-1]
        with urllib.request.urlopen(f"http://{monitor}/connz?auth=1", timeout=10) as r:
            connz = json.load(r)
        return {(c.get("name", ""), c.get("authorized_user", "")) for c in connz["connections"]}


def start_secured(folder: Path, tls: Tls | None, *, verify_clients: bool = False) -> Secured:
    conf = folder / "conf"
    conf.mkdir(parents=True)
    for f in ("nats-server.conf", "tls.conf"):
        shutil.copy(DEPLOY / f, conf / f)
    main = conf / "server.conf"
    main.write_text("include nats-server.conf\n" + ("include tls.conf\n" if tls else ""))
    if verify_clients:  # tls.conf's commented-out lines, switched on
        text = (conf / "tls.conf").read_text()
        text = text.replace("# ca_file:", "ca_file:").replace("# verify:", "verify:")
        (conf / "tls.conf").write_text(text)
    # Values the config reads from the environment are parsed as config values: start with a
    # letter (a digit-only or "-" prefixed one misparses).
    passwords = {role: "pw" + secrets.token_hex(16) for role in ROLES}
    env = {"PATH": os.environ.get("PATH", "")}
    env.update({f"NATS_{role.upper()}_PASSWORD": pw for role, pw in passwords.items()})
    if tls:
        env.update({"NATS_TLS_CERT": str(tls.cert), "NATS_TLS_KEY": str(tls.key)})
        env["NATS_TLS_CLIENT_CA"] = str(tls.ca)
    server = EmbeddedNats(folder / "nats", port=0, monitor_port=-1, config=main, env=env)
    server.start()
    return Secured(server, passwords, tls)


@pytest.fixture(params=["password", "tls"])
def secured(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Secured]:
    tls = make_tls(tmp_path / "tls") if request.param == "tls" else None
    s = start_secured(tmp_path, tls)
    try:
        yield s
    finally:
        s.server.stop()


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[Secured]:
    s = start_secured(tmp_path, None)
    try:
        yield s
    finally:
        s.server.stop()


@pytest.fixture
async def roles(
    secured: Secured, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Secured, NATS]]:
    """A controller under the controller role whose workers run under the worker role.

    As in production, the controller's settings come from its environment (which workers
    inherit) and the workers' own credentials from ``worker_env``.
    """
    monkeypatch.setenv("SHOAL_NATS_URL", secured.url)
    monkeypatch.setenv("SHOAL_NATS_USER", "shoal-controller")
    monkeypatch.setenv("SHOAL_NATS_PASSWORD", secured.passwords["controller"])
    if secured.tls:
        monkeypatch.setenv("SHOAL_NATS_TLS_CA", str(secured.tls.ca))
    # The workers' own credentials, as an operator gives them: SHOAL_WORKER_NATS_*.
    monkeypatch.setenv("SHOAL_WORKER_NATS_USER", "shoal-worker")
    monkeypatch.setenv("SHOAL_WORKER_NATS_PASSWORD", secured.passwords["worker"])
    settings = ControllerSettings.from_env()
    assert settings.worker_env == {
        "SHOAL_NATS_USER": "shoal-worker",
        "SHOAL_NATS_PASSWORD": secured.passwords["worker"],
    }
    fast = controller_settings(worker_env={**FAST, **settings.worker_env})
    nc = await connect(name="test-controller")
    try:
        async with ProcessLauncher(code_dir=tmp_path / "code", stop_grace=15) as launcher:
            controller = Controller(nc, launcher, fast)
            async with anyio.create_task_group() as tg:
                await tg.start(controller.run)
                yield secured, nc
                tg.cancel_scope.cancel()
    finally:
        await nc.close()


class Errors:
    """An error callback that records what the server refused, and wakes a waiter."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._changed = anyio.Event()

    async def __call__(self, e: Exception) -> None:
        self.seen.append(str(e))
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, text: str, timeout: float = 5.0) -> None:
        """Until the server has refused ``text`` (nats-py lower-cases its messages)."""
        with anyio.fail_after(timeout):
            while not any(text.lower() in s.lower() for s in self.seen):
                await self._changed.wait()


# Authentication


async def test_unauthenticated_client_is_refused(
    plain: Secured, caplog: pytest.LogCaptureFixture
) -> None:
    with anyio.fail_after(10):
        with pytest.raises(NatsRefused, match="Authorization Violation"):
            await connect(plain.url, name="anonymous", auth=NatsAuth())
        with pytest.raises(NatsRefused, match="user 'shoal-client'") as wrong:
            await connect(
                plain.url, name="wrong", auth=NatsAuth(user="shoal-client", password="hunter2")
            )
        # A password in the URL is redacted in the message.
        host = plain.url.removeprefix("nats://")
        with pytest.raises(NatsRefused) as in_url:
            await connect(f"nats://shoal-client:hunter2@{host}", name="url", auth=NatsAuth())
    assert "hunter2" not in str(wrong.value) and "hunter2" not in str(in_url.value)
    assert "shoal-client:***@" in str(in_url.value)
    assert "hunter2" not in caplog.text

    url = f"nats://shoal-client:{plain.passwords['client']}@{host}"
    nc = await connect(url, name="ok", auth=NatsAuth())
    await nc.close()


async def test_credentials_from_environment(tmp_path: Path) -> None:
    seed = tmp_path / "user.nk"
    seed.write_text("SU...")
    secret = tmp_path / "password"
    secret.write_text("from-a-file\n")
    env = {
        "SHOAL_NATS_USER": "app",
        "SHOAL_NATS_PASSWORD_FILE": str(secret),
        "SHOAL_NATS_NKEY_SEED": str(seed),
        "SHOAL_NATS_CREDS": "",  # empty counts as unset (to clear an inherited value)
        "SHOAL_NATS_INBOX_PREFIX": "_INBOX.app",
    }
    auth = NatsAuth.from_env(env)
    assert auth.user == "app" and auth.password == "from-a-file" and auth.creds is None
    assert auth.nkey_seed == seed and auth.inbox_prefix == "_INBOX.app"
    assert "from-a-file" not in repr(auth)
    opts = auth.options("nats://127.0.0.1:4222")
    assert opts["user"] == "app" and opts["nkeys_seed"] == str(seed) and "tls" not in opts
    assert "tls" in auth.options("tls://nats.example:4222")  # tls:// alone asks for TLS

    with pytest.raises(FileNotFoundError, match="SHOAL_NATS_CREDS"):
        NatsAuth.from_env({"SHOAL_NATS_CREDS": str(tmp_path / "missing.creds")})
    with pytest.raises(ValueError, match="SHOAL_NATS_TLS_KEY"):
        NatsAuth.from_env({"SHOAL_NATS_TLS_CERT": str(seed)})


async def test_nkey_seed_file(tmp_path: Path) -> None:
    nkeys = pytest.importorskip("nkeys")

    def new_seed(path: Path) -> str:
        path.write_bytes(nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER))
        return str(nkeys.from_seed(bytearray(path.read_bytes())).public_key.decode())

    allowed = new_seed(tmp_path / "allowed.nk")
    new_seed(tmp_path / "other.nk")
    conf = tmp_path / "nkey.conf"
    permissions = '{ publish: "fn.>", subscribe: "_INBOX.>" }'
    conf.write_text(
        f"authorization {{ users = [ {{ nkey: {allowed}, permissions: {permissions} }} ] }}\n"
    )
    server = EmbeddedNats(tmp_path / "nats", port=0, config=conf).start()
    try:
        auth = NatsAuth.from_env({"SHOAL_NATS_NKEY_SEED": str(tmp_path / "allowed.nk")})
        nc = await connect(server.url, name="nkey", auth=auth)
        await nc.flush()
        await nc.close()
        other = NatsAuth.from_env({"SHOAL_NATS_NKEY_SEED": str(tmp_path / "other.nk")})
        with anyio.fail_after(10), pytest.raises(NatsRefused, match="nkey seed file"):
            await connect(server.url, name="nkey", auth=other)
    finally:
        server.stop()


# Roles, end to end


async def test_client_role_invokes_functions_end_to_end(roles: tuple[Secured, NATS]) -> None:
    secured, controller_nc = roles
    await deploy_file(controller_nc, FUNCTIONS / "echo.py")
    nc = await secured.connect("client")
    try:
        client = Client(nc)
        with anyio.fail_after(30):
            assert await client.call("echo", {"cold": 1}) == {"cold": 1}  # queued, then served
            assert await client.call("echo", {"warm": 2}) == {"warm": 2}
            inbox = nc.new_inbox()
            assert inbox.startswith(CLIENT_INBOX + ".")
            sub = await nc.subscribe(inbox)
            rid = await client.publish("echo", {"durable": 3}, reply_to=inbox)
            reply = await sub.next_msg(timeout=30)
        assert json.loads(reply.data) == {"durable": 3}
        assert reply.headers and reply.headers[protocol.REQUEST_ID] == rid
        # Each ran under its role, and nothing any of them did was refused.
        users = await anyio.to_thread.run_sync(secured.users)
        assert {u for n, u in users if n.startswith("shoal-worker-")} == {"shoal-worker"}
        assert ("test-controller", "shoal-controller") in users
        assert ("test-client", "shoal-client") in users
        assert await secured.violations(nc) == []
    finally:
        await nc.close()


async def test_partitioned_model_runs_under_the_worker_role(roles: tuple[Secured, NATS]) -> None:
    """Partitions hand-outs, pings, intermediates and peer watches are all in the role."""
    secured, controller_nc = roles
    await deploy_file(controller_nc, FNS / "partitioned.py")
    nc = await secured.connect("client")
    try:
        with anyio.fail_after(60):
            out = await Client(nc).call("allsum", {"partitions": 3, "n": 4, "steps": 2})
        # arange(4).sum() = 6; one step sums the 3 partitions (x 1+2+3), the next x 3.
        assert out["sums"] == [6 * 6 * 3.0] * 3
        assert await secured.violations(nc) == []
    finally:
        await nc.close()


async def test_a_bundle_in_the_object_store_loads_under_the_worker_role(
    roles: tuple[Secured, NATS], tmp_path: Path
) -> None:
    """Code too large for KV is read from the object store within the worker role."""
    secured, controller_nc = roles
    weights = os.urandom(kv_limit(controller_nc) + 200_000)
    files = {"model.py": BIG, "helpers.py": "TAG = 'big'\n", "weights.bin": weights}
    big = write(tmp_path / "big", files)
    await deploy_file(controller_nc, big)
    nc = await secured.connect("client")
    try:
        with anyio.fail_after(60):
            out = await Client(nc).call("weights", {})
        assert out == {
            "sha": hashlib.sha256(weights).hexdigest(),
            "size": len(weights),
            "tag": "big",
        }
        assert await secured.violations(nc) == []
    finally:
        await nc.close()


async def test_client_role_is_refused_internal_subjects(plain: Secured) -> None:
    admin = await plain.connect("controller")
    results = await kv(admin.jetstream(), protocol.RESULTS_BUCKET)
    await results.put("someone-else", b"their result")
    stops = await admin.subscribe("shoal.worker.x.stop")
    errors = Errors()
    nc = await plain.connect("client", error_cb=errors)
    try:
        # Subscriptions to events, internal subjects, others' inboxes, or results.
        for subject in ("fn.>", "shoal.>", "_INBOX.>", "$KV.shoal_results.>"):
            await nc.subscribe(subject)
            await errors.wait_for(f'Subscription to "{subject}"')

        # Publishing to internal subjects: refused, and nothing arrives.
        await nc.publish("shoal.worker.x.stop", b"")
        await errors.wait_for('Publish to "shoal.worker.x.stop"')
        await nc.flush()  # the server has handled (dropped) it before the marker below
        await admin.publish("shoal.worker.x.stop", b"marker")
        assert (await stops.next_msg(timeout=5)).data == b"marker"
        for subject in ("$KV.shoal_results.someone-else", "$JS.API.CONSUMER.CREATE.X"):
            await nc.publish(subject, b"forged")
            await errors.wait_for(f'Publish to "{subject}"')

        # Reading results: each way in is refused (no reply comes, only the error).
        key = "$KV.shoal_results.someone-else"
        reads = {
            "$JS.API.STREAM.INFO.KV_shoal_results": b"",
            "$JS.API.STREAM.MSG.GET.KV_shoal_results": json.dumps({"last_by_subj": key}).encode(),
            f"$JS.API.DIRECT.GET.KV_shoal_results.{key}": b"",
            # Nor the workers' log lines.
            "$JS.API.STREAM.INFO.SHOAL_LOGS": b"",
            "$JS.API.STREAM.MSG.GET.SHOAL_LOGS": json.dumps({"seq": 1}).encode(),
        }

        async def refused(subject: str, payload: bytes) -> None:
            with pytest.raises(nats.errors.TimeoutError):
                await nc.request(subject, payload, timeout=1)
            await errors.wait_for(f'Publish to "{subject}"')

        async def bucket_refused() -> None:
            with pytest.raises(nats.errors.TimeoutError):
                await nc.jetstream(timeout=1).key_value(protocol.RESULTS_BUCKET)

        async with anyio.create_task_group() as tg:
            for subject, payload in reads.items():
                tg.start_soon(refused, subject, payload)
            tg.start_soon(bucket_refused)
        assert (await results.get("someone-else")).value == b"their result"
        assert nc.is_connected  # refusals are per operation; the connection stays
    finally:
        await nc.close()
        await admin.close()


@pytest.mark.parametrize("secured", ["password"], indirect=True)
async def test_reply_to_cannot_reach_internal_subjects(roles: tuple[Secured, NATS]) -> None:
    """A client must not make a worker write where the client may not (a confused deputy):
    here, forge the stored result of someone else's request through a Shoal-Reply-To."""
    secured, controller_nc = roles
    await deploy_file(controller_nc, FUNCTIONS / "echo.py")
    results = await kv(controller_nc.jetstream(), protocol.RESULTS_BUCKET)
    nc = await secured.connect("client")
    try:
        forged = {
            "request_id": "victim",
            "function": "echo",
            "ok": True,
            "value": "forged",
            "encoding": "json",
            "finished_at": time.time(),
        }
        await Client(nc).publish(
            "echo",
            forged,  # echo answers with its event, encoded as it came: a stored Result
            encoding="msgpack",
            request_id="forger",
            reply_to=f"$KV.{protocol.RESULTS_BUCKET}.victim",
        )
        # The worker answers before it stores its own result: once that is there, any
        # answer to the forged subject has been written too.
        await Client(controller_nc).wait_result("forger", timeout=30)
    finally:
        await nc.close()
    try:
        entry = await results.get("victim")
    except nats.js.errors.KeyNotFoundError:
        return
    raise AssertionError(f"a client forged a stored result: {msgpack.unpackb(entry.value)}")


# TLS


async def test_client_without_the_ca_is_refused(tmp_path: Path) -> None:
    secured = start_secured(tmp_path, make_tls(tmp_path / "tls"))
    try:
        with anyio.fail_after(10):
            with pytest.raises(NatsRefused, match="CERTIFICATE_VERIFY_FAILED"):
                await connect(secured.url, name="no-ca", auth=secured.auth("client", tls_ca=None))
            # A nats:// URL is upgraded to TLS when the server requires it: still verified.
            with pytest.raises(NatsRefused, match="CERTIFICATE_VERIFY_FAILED"):
                await connect(
                    secured.server.url, name="no-ca", auth=secured.auth("client", tls_ca=None)
                )
            nc = await connect(secured.server.url, name="ca", auth=secured.auth("client"))
            await nc.close()
    finally:
        secured.server.stop()


async def test_tls_asked_for_is_never_given_up(plain: Secured, tmp_path: Path) -> None:
    """A client with TLS settings refuses a server that does not offer TLS (or a downgrade
    in between) before it sends its password."""
    ca = make_tls(tmp_path / "tls").ca
    for url in (plain.url, plain.url.replace("nats://", "tls://")):
        with anyio.fail_after(10), pytest.raises(NatsRefused, match="offers no TLS"):
            # A wrong password: had it been sent, the server would log an authentication error.
            auth = NatsAuth(user="shoal-client", password="wrong", tls_ca=ca)
            await connect(url, name="tls", auth=auth)
    with anyio.fail_after(10), pytest.raises(NatsRefused, match="Authorization Violation"):
        await connect(plain.url, name="plain", auth=NatsAuth(user="shoal-client", password="wrong"))
    # The server logs in order: once the refusal of that last password is in its log, any
    # password sent before it would be too.
    await anyio.to_thread.run_sync(plain.server.wait_for_log, "authentication error", 5)
    assert sum("authentication error" in line for line in plain.server.lines) == 1


async def test_mutual_tls_client_certificate_from_environment(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    secured = start_secured(tmp_path, tls, verify_clients=True)
    env = {
        "SHOAL_NATS_USER": "shoal-client",
        "SHOAL_NATS_PASSWORD": secured.passwords["client"],
        "SHOAL_NATS_TLS_CA": str(tls.ca),
    }
    try:
        with anyio.fail_after(10):
            with_cert = {
                **env,
                "SHOAL_NATS_TLS_CERT": str(tls.client_cert),
                "SHOAL_NATS_TLS_KEY": str(tls.client_key),
            }
            nc = await connect(secured.url, name="mtls", auth=NatsAuth.from_env(with_cert))
            await nc.flush()
            await nc.close()
            with pytest.raises(NatsRefused, match="CERTIFICATE_REQUIRED"):
                await connect(secured.url, name="no-cert", auth=NatsAuth.from_env(env))
    finally:
        secured.server.stop()


async def test_a_command_the_role_may_not_use_says_so(roles: tuple[Secured, NATS]) -> None:
    secured, controller_nc = roles
    await deploy_file(controller_nc, FUNCTIONS / "echo.py")
    env = {
        "SHOAL_NATS_URL": secured.url,
        "SHOAL_NATS_USER": "shoal-client",
        "SHOAL_NATS_PASSWORD": secured.passwords["client"],
        "SHOAL_NATS_INBOX_PREFIX": CLIENT_INBOX,
    }
    if secured.tls:
        env["SHOAL_NATS_TLS_CA"] = str(secured.tls.ca)
    called = await ashoal("invoke", "echo", '{"x": 1}', env=env)
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout) == {"x": 1}
    for args in (("status",), ("result", "x"), ("deploy", str(FUNCTIONS / "echo.py"))):
        refused = await ashoal(*args, env=env)
        assert refused.returncode == Exit.REFUSED, (args, refused.stderr)
        assert "shoal-client" in refused.stderr
        assert "permissions violation" in refused.stderr.lower()
        assert "Traceback" not in refused.stderr
    wrong = await ashoal("status", env={**env, "SHOAL_NATS_PASSWORD": "wrong"})
    assert wrong.returncode == Exit.REFUSED and "Traceback" not in wrong.stderr


@pytest.mark.parametrize("secured", ["password"], indirect=True)
async def test_worker_logs_reach_the_controller_role(roles: tuple[Secured, NATS]) -> None:
    """Workers publish their lines under the worker role; the controller role reads them."""
    secured, controller_nc = roles
    await deploy_file(controller_nc, FNS / "chatty.py")
    nc = await secured.connect("client")
    try:
        with anyio.fail_after(30):
            assert await Client(nc).call("chatty", {"n": 7}, request_id="logged-7") == 7
        js = controller_nc.jetstream()
        sub = await js.subscribe(logstream.function_subjects("chatty"), ordered_consumer=True)
        lines: list[dict[str, Any]] = []
        with anyio.fail_after(20):
            while not any(line.get("message") == "printed 7" for line in lines):
                lines += logstream.decode_lines((await sub.next_msg(timeout=20)).data)
        await sub.unsubscribe()
        printed = next(line for line in lines if line.get("message") == "printed 7")
        assert printed["request_id"] == "logged-7" and printed["stream"] == "stdout"
        assert await secured.violations(nc) == []
    finally:
        await nc.close()
