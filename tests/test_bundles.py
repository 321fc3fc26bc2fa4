"""Deploying folders as bundles, and loading all deployed code under private module names,
against a real nats-server, real process workers and a real S3 server."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import textwrap
import zipfile
from typing import TYPE_CHECKING

import anyio
import pytest
from nats.js.errors import KeyNotFoundError, ObjectNotFoundError

import storage
from controller import EmbeddedNats, deploy_file
from controller.deploy import deploy_spec
from runtime import Client, DeployError
from runtime.bundles.bundle import Bundle
from runtime.bundles.loader import PREFIX
from runtime.bundles.store import kv_limit, prune_code
from runtime.wire import protocol
from runtime.wire.connection import kv
from runtime.wire.spec import FunctionSpec
from tests.conftest import wait_workers

if TYPE_CHECKING:
    from pathlib import Path

    from nats.aio.client import Client as NATS

    from tests.conftest import Cluster, S3Server

pytestmark = pytest.mark.anyio


def write(folder: Path, files: dict[str, str | bytes]) -> Path:
    """Write ``files`` (relative path -> source, dedented, or raw bytes) under ``folder``."""
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content))
    return folder


SHOP = {
    "__init__.py": """
        from runtime import function

        @function
        def catalog(event):
            from . import helpers  # the bundle's root package reaches its modules too

            return {"items": helpers.total([{"qty": 2, "unit": 1}])}
        """,
    "handlers.py": """
        import json
        from pathlib import Path

        from runtime import function

        from . import helpers
        from .pricing import tax

        RATES = json.loads((Path(__file__).parent / "rates.json").read_text())

        @function
        def price(event):
            net = helpers.total(event["items"])
            return {"net": net, "gross": tax.gross(net, RATES[event["country"]])}
        """,
    "helpers.py": """
        def total(items):
            return sum(i["qty"] * i["unit"] for i in items)
        """,
    "pricing/__init__.py": "",
    "pricing/tax.py": """
        from ..helpers import total  # noqa: F401  (relative imports reach up too)

        def gross(net, rate):
            return round(net * (1 + rate), 2)
        """,
    "rates.json": '{"fr": 0.2, "de": 0.19}',
}


async def test_bundle_function_imports_its_modules(cluster: Cluster, tmp_path: Path) -> None:
    shop = write(tmp_path / "shop", SHOP)
    write(shop, {"__pycache__/junk.py": "raise SystemExit", ".hidden.py": "raise SystemExit"})
    path_before = list(sys.path)
    specs = await deploy_file(cluster.nc, shop)
    assert [(s.name, s.module, s.attr) for s in specs] == [
        ("catalog", "", "catalog"),
        ("price", "handlers", "price"),
    ]
    assert {s.code_sha for s in specs} == {Bundle.from_path(shop).digest}
    event = {"country": "fr", "items": [{"qty": 3, "unit": 2.5}, {"qty": 1, "unit": 4.0}]}
    got = await Client(cluster.nc).call("price", event, timeout=30)
    assert got == {"net": 11.5, "gross": 13.8}
    assert await Client(cluster.nc).call("catalog", {}, timeout=30) == {"items": 2}
    # Deploying changed nothing in this process: no private modules left, sys.path as it was.
    assert not [m for m in sys.modules if m.startswith(PREFIX)]
    assert sys.path == path_before


def test_bundle_contents_and_archive_are_deterministic(tmp_path: Path) -> None:
    shop = write(tmp_path / "shop", SHOP)
    write(shop, {"__pycache__/x.pyc": b"\0", ".git/config": "", "notes.pyc": b"\0"})
    first = Bundle.from_path(shop)
    assert sorted(first.files) == sorted(SHOP)
    assert first.modules() == {
        "": "__init__.py",
        "handlers": "handlers.py",
        "helpers": "helpers.py",
        "pricing": "pricing/__init__.py",
        "pricing.tax": "pricing/tax.py",
    }
    os.utime(shop / "helpers.py", (0, 0))  # timestamps are not part of the code
    again = Bundle.from_path(shop)
    assert (again.digest, again.to_zip()) == (first.digest, first.to_zip())
    assert Bundle.from_zip(first.to_zip()) == first
    (shop / "helpers.py").write_text("def total(items):\n    return 0\n")
    assert Bundle.from_path(shop).digest != first.digest


async def test_redeploying_the_same_bundle_is_the_same_version(nc: NATS, tmp_path: Path) -> None:
    shop = write(tmp_path / "shop", SHOP)
    first = await deploy_file(nc, shop, wait=0)
    os.utime(shop / "handlers.py", (0, 0))
    second = await deploy_file(nc, shop, wait=0)
    assert [s.version for s in first] == [s.version for s in second]
    assert len(first) == 2
    code = await kv(nc.jetstream(), protocol.CODE_BUCKET)
    assert Bundle.from_zip((await code.get(first[0].code_sha)).value or b"").digest == (
        first[0].code_sha
    )


async def test_a_refused_redeploy_keeps_the_deployed_version_and_old_code_is_pruned(
    nc: NATS, tmp_path: Path
) -> None:
    shop = write(tmp_path / "shop", SHOP)
    first = await deploy_file(nc, shop, wait=0)
    js = nc.jetstream()
    functions = await kv(js, protocol.FUNCTIONS_BUCKET)
    code = await kv(js, protocol.CODE_BUCKET)
    deployed = {s.name: (await functions.get(s.name)).value for s in first}

    (shop / "helpers.py").write_text("def total(items):\n    return sum(\n")  # broken
    broken = r"handlers\.py failed: SyntaxError in helpers\.py, line 2"  # handlers imports it
    with pytest.raises(DeployError, match=broken):
        await deploy_file(nc, shop, wait=0)
    assert {n: (await functions.get(n)).value for n in deployed} == deployed
    assert sorted(await code.keys()) == [first[0].code_sha]

    (shop / "helpers.py").write_text("def total(items):\n    return 0\n")
    second = await deploy_file(nc, shop, wait=0)
    old, new = first[0].code_sha, second[0].code_sha
    assert old != new and sorted(await code.keys()) == sorted([old, new])  # recent: kept
    assert await prune_code(js, grace=0) == [old]  # no function names it any more
    assert await code.keys() == [new]


STORAGE_USER = """
    import storage  # Shoal's: a deployment's own storage.py is not a top-level module
    from runtime import function

    from . import storage as mine

    @function
    def roundtrip(event):
        store = storage.ObjectStore.from_env()
        store.ensure_bucket()
        store.put_bytes(event["key"], event["text"].encode())
        return {
            "mine": mine.LABEL,
            "back": store.get_bytes(event["key"]).decode(),
            "shoal": storage.__name__,
        }
    """


async def test_a_deployed_storage_py_leaves_shoals_storage_alone(
    cluster: Cluster, tmp_path: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = s3_server.settings()
    monkeypatch.setenv("SHOAL_S3_ENDPOINT", f"http://{settings.endpoint}")
    monkeypatch.setenv("SHOAL_S3_ACCESS_KEY", settings.access_key)
    monkeypatch.setenv("SHOAL_S3_SECRET_KEY", settings.secret_key)
    monkeypatch.setenv("SHOAL_S3_BUCKET", settings.bucket)
    shop = write(
        tmp_path / "shop",
        {"app.py": STORAGE_USER, "storage.py": 'LABEL = "the bundle\'s storage.py"\n'},
    )
    await deploy_file(cluster.nc, shop)
    assert sys.modules["storage"] is storage  # the deploying process kept Shoal's too
    client = Client(cluster.nc)
    got = await client.call("roundtrip", {"key": "bundle/a", "text": "kept"}, timeout=60)
    assert got == {"mine": "the bundle's storage.py", "back": "kept", "shoal": "storage"}

    # A single file named like one of Shoal's packages deploys and runs as well.
    alone = write(
        tmp_path / "single",
        {
            "storage.py": """
                import storage
                from runtime import function

                @function
                def where(event):
                    store = storage.ObjectStore.from_env()
                    store.ensure_bucket()
                    store.put_bytes("single/b", b"shoal's storage")
                    got = store.get_bytes("single/b").decode()
                    return {"me": __name__.rsplit(".", 1)[-1], "got": got}
                """,
            "runtime.py": """
                from runtime import function  # Shoal's runtime, not this file

                @function
                def shadow(event):
                    return {"module": __name__.startswith("shoal_user_")}
                """,
        },
    )
    assert [s.module for s in await deploy_file(cluster.nc, alone / "storage.py")] == ["storage"]
    assert [s.module for s in await deploy_file(cluster.nc, alone / "runtime.py")] == ["runtime"]
    assert sys.modules["storage"] is storage
    assert await client.call("where", {}, timeout=60) == {"me": "storage", "got": "shoal's storage"}
    assert await client.call("shadow", {}, timeout=60) == {"module": True}


async def test_a_file_deploys_as_before_and_old_deployments_still_load(
    cluster: Cluster, tmp_path: Path
) -> None:
    source = b"from runtime import function\n\n@function\ndef legacy(event):\n    return event\n"
    # A spec and code as deploys wrote them before bundles: the module's source in KV
    # under its SHA-256, the module named after the file.
    sha = hashlib.sha256(source).hexdigest()
    code = await kv(cluster.nc.jetstream(), protocol.CODE_BUCKET)
    await code.put(sha, source)
    old = FunctionSpec(name="legacy", module="legacy", attr="legacy", code_sha=sha)
    announced = await cluster.nc.subscribe(protocol.deployed_subject("legacy"))
    assert await deploy_spec(cluster.nc.jetstream(), old)
    assert (await announced.next_msg(timeout=10)).data.decode() == old.version  # served
    client = Client(cluster.nc)
    assert await client.call("legacy", {"n": 1}, timeout=30) == {"n": 1}

    fresh = write(tmp_path, {"plain.py": source.decode().replace("legacy", "plain")})
    specs = await deploy_file(cluster.nc, fresh / "plain.py")
    assert [(s.name, s.module) for s in specs] == [("plain", "plain")]
    assert await client.call("plain", {"n": 2}, timeout=30) == {"n": 2}


@pytest.mark.parametrize(
    ("files", "target", "message"),
    [
        (
            {"a.py": "from runtime import function\n\n@function\ndef f(e):\n    return (\n"},
            "",
            r"a\.py failed: SyntaxError in a\.py, line 5: '\(' was never closed",
        ),
        ({"a.py": "X = 1\n", "b/c.py": "Y = 2\n"}, "", "defines no @function"),
        ({"data.txt": "no code"}, "", "holds no Python module"),
        (
            {"a.py": "import helpers\n", "helpers.py": ""},
            "",
            "helpers is part of this deployment.*write 'from . import helpers'",
        ),
        (
            {"a.py": "import helpers\n", "helpers.py": ""},
            "a.py",
            "helpers sits beside the deployed file.*deploy the folder",
        ),
        ({"a.py": "import no_such_package_here\n"}, "", "No module named 'no_such_package"),
        ({"a.py": "raise RuntimeError('boom at import')\n"}, "a.py", "RuntimeError: boom"),
        ({"a.py": "import sys\n\nsys.exit(3)\n"}, "", r"a\.py failed: it called sys\.exit\(3\)"),
        (
            {"a.py": "from .pkg import mod\n", "pkg/mod.py": "import pkg.other\n"},
            "",
            "No module named 'pkg'.*write 'from . import pkg'",
        ),
        (
            {
                "a.py": "from runtime import function\n\n@function\ndef f(e):\n    return 1\n",
                "b.py": "from runtime import function\n\n@function(name='f')\ndef g(e):\n"
                "    return 2\n",
            },
            "",
            r"'f' is defined 2 times .*\(a\.py, b\.py\)",
        ),
        ({"a.txt": "x"}, "a.txt", "neither a Python file nor a folder"),
    ],
)
async def test_bad_code_is_refused_and_nothing_is_deployed(
    nc: NATS, tmp_path: Path, files: dict[str, str], target: str, message: str
) -> None:
    folder = write(tmp_path / "bad", files)
    with pytest.raises(DeployError, match=message):
        await deploy_file(nc, folder / target if target else folder, wait=0)
    assert not [m for m in sys.modules if m.startswith(PREFIX)]
    functions = await kv(nc.jetstream(), protocol.FUNCTIONS_BUCKET)
    code = await kv(nc.jetstream(), protocol.CODE_BUCKET)
    for bucket in (functions, code):
        with pytest.raises(Exception, match="no keys found"):
            await bucket.keys()


def test_archive_entries_cannot_leave_the_bundle() -> None:
    for name in ("../evil.py", "/etc/evil.py", "a/../../evil.py"):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr(name, b"x = 1\n")
        with pytest.raises(DeployError, match="outside the bundle"):
            Bundle.from_zip(buf.getvalue())


BIG = """
    import hashlib
    from pathlib import Path

    from runtime import function

    from . import helpers

    @function
    def weights(event):
        data = (Path(__file__).parent / "weights.bin").read_bytes()
        return {"sha": hashlib.sha256(data).hexdigest(), "size": len(data), "tag": helpers.TAG}
    """


async def test_a_bundle_above_the_kv_limit_goes_to_the_object_store(
    cluster: Cluster, tmp_path: Path
) -> None:
    js = cluster.nc.jetstream()
    code = await kv(js, protocol.CODE_BUCKET)
    client = Client(cluster.nc)
    shas = []
    for tag in ("v1", "v2"):
        weights = os.urandom(kv_limit(cluster.nc) + 300_000)  # incompressible, above the limit
        big = write(
            tmp_path / tag,
            {"model.py": BIG, "helpers.py": f"TAG = {tag!r}\n", "weights.bin": weights},
        )
        [spec] = await deploy_file(cluster.nc, big)
        shas.append(spec.code_sha)
        store = await js.object_store(protocol.CODE_BUCKET)
        assert (await store.get_info(spec.code_sha)).size > cluster.nc.max_payload
        with pytest.raises(KeyNotFoundError):
            await code.get(spec.code_sha)  # not in KV
        with anyio.fail_after(60):  # until the old version's worker has stopped answering
            while (got := await client.call("weights", {}, timeout=60))["tag"] != tag:
                pass
        assert got == {"sha": hashlib.sha256(weights).hexdigest(), "size": len(weights), "tag": tag}
        # The old version's worker answers until the controller drains it: wait for that.
        current = {spec.version}
        await wait_workers(
            cluster.nc, "weights", lambda ws, v=current: {w["version"] for w in ws.values()} == v
        )
    # v1's code is no function's any more: gone once the grace for deploys in flight is over.
    store = await js.object_store(protocol.CODE_BUCKET)
    await store.get_info(shas[0])  # a deploy keeps recent code
    assert await prune_code(js, grace=0) == [shas[0]]
    with pytest.raises(ObjectNotFoundError):
        await store.get_info(shas[0])
    await store.get_info(shas[1])
    assert (await client.call("weights", {}, timeout=60))["tag"] == "v2"


async def test_shoal_deploy_takes_a_folder(nats_server: EmbeddedNats, tmp_path: Path) -> None:
    shop = write(tmp_path / "shop", SHOP)
    bad = write(tmp_path / "bad", {"a.py": "def broken(:\n"})
    env = {**os.environ, "SHOAL_NATS_URL": nats_server.url}
    cli = [sys.executable, "-m", "controller.cli", "deploy"]
    done = await anyio.run_process([*cli, str(shop)], env=env, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert b"deployed price (version " in done.stdout
    refused = await anyio.run_process([*cli, str(bad)], env=env, check=False)
    assert refused.returncode != 0
    assert "a.py failed: SyntaxError in a.py, line 1" in refused.stderr.decode()


async def test_code_a_host_has_written_out_is_not_fetched_again(nc: NATS, tmp_path: Path) -> None:
    """A worker finds the deployment's code in the host's code folder (written whole by an
    earlier worker, under its digest) and imports it without fetching it from NATS."""
    from runtime.worker.assembly import load_definition

    source = "from runtime import function\n\n@function\ndef kept(event):\n    return event\n"
    (spec,) = await deploy_file(nc, write(tmp_path, {"kept.py": source}) / "kept.py")
    first = await load_definition(nc, "kept", tmp_path / "code")
    assert (tmp_path / "code" / spec.code_sha / "kept.py").read_text() == source
    await (await kv(nc.jetstream(), protocol.CODE_BUCKET)).purge(spec.code_sha)
    again = await load_definition(nc, "kept", tmp_path / "code")  # from the folder
    assert again.spec == first.spec == spec
    with pytest.raises(DeployError, match="no deployed code"):  # another host: fetched
        await load_definition(nc, "kept", tmp_path / "elsewhere")
