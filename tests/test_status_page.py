"""The status page in a real browser (Debian's chromium, driven by Playwright): it loads from
the controller during a run, and a function's counters change on it, without a reload, as the
function is invoked; errors show with their request ids.

``SHOAL_TEST_SCREENSHOT=docs/status-page.png`` also saves the page (README's screenshot) after
a longer run."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import anyio
import pytest

from controller import deploy_file
from runtime import Client
from runtime.errors import FunctionError
from tests.conftest import FNS
from tests.observability import chromium_binary, get, observed_cluster, poll

if TYPE_CHECKING:
    from pathlib import Path

    from nats.aio.client import Client as NATS

pytestmark = pytest.mark.anyio

PAGE_TIMEOUT = 20.0  # seconds for the page to show a change (it polls every 2 s)


async def test_the_page_shows_counters_change_as_the_function_is_invoked(
    nc: NATS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nats_server: object
) -> None:
    chromium = chromium_binary()
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[test]'")
    monkeypatch.setenv("SHOAL_NATS_URL", nats_server.url)  # type: ignore[attr-defined]
    shot = os.environ.get("SHOAL_TEST_SCREENSHOT")
    async with observed_cluster(nc, tmp_path, controller_id="ctl-page") as cluster:
        await deploy_file(nc, FNS / "observed.py")
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                page = await browser.new_page(viewport={"width": 1500, "height": 900})
                await page.goto(cluster.url)
                ok = page.locator('#functions tr:has(td[data-function="echo"]) td[data-field="ok"]')

                async def shown(expected: str, what: str) -> None:
                    async def check() -> bool:
                        return (await ok.text_content() or "").strip() == expected

                    try:
                        await poll(check, PAGE_TIMEOUT, what)
                    except AssertionError as e:  # what the page and its API show instead
                        api = json.loads(await get(cluster.url + "api/status"))
                        rows = [
                            {k: v for k, v in f.items() if k != "history"}
                            for f in api["functions"]
                            if f["name"] == "echo"
                        ]
                        page = await ok.text_content()
                        raise AssertionError(f"{e}; page {page!r}; api {rows}") from None

                await shown("0", "echo listed with 0 ok")
                client = Client(nc)
                for i in range(3):
                    await client.call("echo", {"i": i}, timeout=60)
                await shown("3", "echo's ok count 3, no reload")
                for i in range(2):
                    await client.call("echo", {"i": i}, timeout=60)
                await shown("5", "echo's ok count 5, no reload")

                with pytest.raises(FunctionError) as failed:
                    await client.call("flaky", {"x": 1}, timeout=60)
                rid = failed.value.request_id
                assert rid
                errors = page.locator('#errors td[data-field="request_id"]')

                async def error_shown() -> bool:
                    return rid in await errors.all_text_contents()

                await poll(error_shown, PAGE_TIMEOUT, f"the error of {rid} on the page")
                if shot:
                    await load_for_a_screenshot(client)
                    await anyio.sleep(2.5)  # one more poll of the page after the load
                    await page.screenshot(path=shot, full_page=True)
                else:
                    await page.screenshot(path=str(tmp_path / "status.png"))
            finally:
                await browser.close()


async def load_for_a_screenshot(client: Client) -> None:
    """Some traffic over 20 s, for the charts: echo, the executor, and a few errors."""
    deadline = anyio.current_time() + 20
    for n in range(10**6):
        if anyio.current_time() > deadline:
            break
        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(client.call, "tallied", {"i": i})
            for i in range(5):
                await client.call("echo", {"i": i}, timeout=60)
        if n % 5 == 0:
            await client.publish("flaky", {"late": n})
        await client.call("pairsum", {}, timeout=60)
        await anyio.sleep(0.5)
