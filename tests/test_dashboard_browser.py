"""The dashboard in a real browser, against a real node with a subnet and registered hotkeys.

Headless Chromium from the system (``/usr/bin/chromium``, or ``$AGORA_CHROMIUM``) driven by
Playwright's Python package; Playwright's own browser download is never used. The test skips,
saying why, when either is missing. Screenshots go to ``tests/artifacts/`` (gitignored).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from agora.chain.client import LedgerClient
from agora.chain.testing import free_port
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.protocol.units import TOKEN
from tests.conftest import REPO, Service

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("AGORA_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = REPO / "tests" / "artifacts"
OWNER = "alice"
MEMBERS = ["alice", "bob", "charlie", "dave"]  # coldkey NAME registers hotkey NAME/hot
VALIDATOR = "alice"


def hotkey(name: str) -> Keypair:
    return Keypair.from_name(name + "/hot")


async def build_subnet(node_url: str) -> int:
    """A subnet owned by alice, four registered hotkeys serving endpoints, stake behind alice's
    hotkey, and weights from it once it holds a validator permit. Returns the netuid."""
    async with LedgerClient(node_url) as client:
        chain = (await client.status()).chain_id

        async def send(signer: Keypair, kind: str, body: dict[str, Any]) -> None:
            nonce = await client.next_nonce(signer.address)
            await client.submit_and_wait(sign_transaction(signer, chain, kind, nonce, body))

        await send(Keypair.from_name(OWNER), "create_subnet", {})
        netuid = (await client.subnets())[-1].netuid
        await asyncio.gather(
            *(
                send(
                    Keypair.from_name(name),
                    "register",
                    {"netuid": netuid, "hotkey": hotkey(name).address},
                )
                for name in MEMBERS
            )
        )
        await asyncio.gather(
            send(
                Keypair.from_name(VALIDATOR),
                "add_stake",
                {"hotkey": hotkey(VALIDATOR).address, "amount": 500 * TOKEN},
            ),
            *(
                send(
                    hotkey(name),
                    "serve",
                    {"netuid": netuid, "ip": "127.0.0.1", "port": 8091 + i, "protocol": "http"},
                )
                for i, name in enumerate(MEMBERS)
            ),
        )
        for _ in range(200):  # permits come with the first epoch (a tempo is 10 blocks on dev)
            metagraph = await client.metagraph(netuid)
            if any(
                n.validator_permit and n.hotkey == hotkey(VALIDATOR).address
                for n in metagraph.neurons
            ):
                break
            await asyncio.sleep(0.1)
        uids = [n.uid for n in metagraph.neurons if n.hotkey != hotkey(VALIDATOR).address]
        await send(
            hotkey(VALIDATOR),
            "set_weights",
            {
                "netuid": netuid,
                "uids": uids,
                "weights": [65535 // (i + 1) for i in range(len(uids))],
            },
        )
        return netuid


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(
            f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set AGORA_CHROMIUM)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright's Python package is missing: pip install playwright")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def dashboard_command(node_url: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "agora.dashboard",
        "--node",
        node_url,
        "--port",
        str(port),
        "--refresh",
        "1",
    ]


def height_of(page: Any) -> int:
    return int(re.sub(r"\D", "", page.text_content("#height") or "") or 0)


def wait_for_height_above(page: Any, height: int, timeout: float = 10_000) -> None:
    page.wait_for_function(
        "h => Number(document.getElementById('height').textContent.replace(/\\D/g, '')) > h",
        arg=height,
        timeout=timeout,
    )


def test_an_operator_watches_the_network(
    browser: Any,
    start_node: Callable[..., Service],
    spawn_service: Callable[..., Service],
    port: int,
) -> None:
    node = start_node(block_time=0.3)
    with ThreadPoolExecutor(1) as thread:  # Playwright's sync API owns this thread's event loop
        netuid = thread.submit(asyncio.run, build_subnet(node.url)).result(timeout=60)
    dashboard = f"http://127.0.0.1:{port}"
    spawn_service(
        dashboard_command(node.url, port),
        ready_url=f"{dashboard}/config.json",
        name="dashboard",
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None
    )

    # The subnet's metagraph lists every hotkey the test registered.
    page.goto(f"{dashboard}/#/subnet/{netuid}")
    registered = {hotkey(name).address for name in MEMBERS}
    page.wait_for_function(
        "n => document.querySelectorAll('#metagraph tbody tr[data-hotkey]').length === n",
        arg=len(MEMBERS),
        timeout=15_000,
    )
    shown = {
        row.get_attribute("data-hotkey") for row in page.query_selector_all("#metagraph tbody tr")
    }
    assert shown == registered
    assert "alice/hot" in (page.text_content("#metagraph") or "")  # dev keys are named
    page.wait_for_selector("#heatmap canvas:not([hidden])", timeout=10_000)  # weights drawn

    # New blocks arrive without a reload: the height in the DOM goes up, the page stays the same.
    page.evaluate("window.__sameDocument = true")
    before = height_of(page)
    assert before > 0
    wait_for_height_above(page, before)
    assert page.evaluate("window.__sameDocument") is True
    page.screenshot(path=str(ARTIFACTS / "dashboard-subnet.png"), full_page=True)

    # A click on a hotkey opens its page.
    target = hotkey("bob").address
    page.locator(f'#metagraph tr[data-hotkey="{target}"] a.addr').click()
    page.wait_for_function(
        "a => document.getElementById('account-address')?.textContent === a", arg=target
    )
    assert page.url.endswith(f"#/account/{target}")
    page.wait_for_selector("#account-neuron-table", timeout=10_000)
    assert f"SN{netuid}" in (page.text_content("#account-neuron-table") or "")
    page.screenshot(path=str(ARTIFACTS / "dashboard-account.png"), full_page=True)

    # The overview: chain figures, live blocks with their transactions; a block opens its page.
    page.locator("nav.main a[data-nav=overview]").click()
    page.wait_for_selector("#recent-txs", timeout=10_000)
    issuance = page.text_content("[data-testid=issuance]") or ""
    assert re.fullmatch(r"\d{1,3}(,\d{3})+\.\d{2}", issuance.strip()), issuance
    page.wait_for_timeout(600)  # a couple more blocks, for a livelier picture
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    # The oldest transaction listed is the subnet's creation; its block shows it.
    link = page.locator("#recent-txs tbody tr:last-child td:first-child a")
    block = int(re.sub(r"\D", "", link.text_content() or ""))
    link.click()
    page.wait_for_selector("#block-txs", timeout=10_000)
    assert page.text_content("#block-height") == f"#{block}"
    assert "create subnet" in (page.text_content("#block-txs") or "")

    # The sections later services fill: ready, and saying what is missing.
    page.locator("nav.main a[data-nav=gateway]").click()
    page.wait_for_selector("#gateway-summary .placeholder", timeout=10_000)
    assert "No gateway connected" in (page.text_content("#gateway-summary") or "")
    page.locator("nav.main a[data-nav=market]").click()
    page.wait_for_selector("#market-body .panel", timeout=10_000)

    # Amounts: exact integers past 2^53 (BigInt from the JSON), thousands separators, decimals.
    checks = page.evaluate(
        """async () => {
            const f = await import("./static/js/format.js");
            const api = await import("./static/js/api.js");
            const cap = api.parseJson('{"cap": 21000000000000001}').cap;
            return [
                typeof cap, f.tokensExact(cap), f.tokens(1234567890123n), f.tokens(5n),
                f.tokens(1500000000, {trim: true}), f.fixed(0.69004), f.int(1234567),
                f.shortHash("ab".repeat(32)), f.escapeHtml("<b>&"),
            ];
        }"""
    )
    assert checks == [
        "bigint",
        "21,000,000.000000001",
        "1,234.5679",
        "0.0000",
        "1.5",
        "0.6900",
        "1,234,567",
        "ababab…abab",
        "&lt;b&gt;&amp;",
    ]

    assert not problems, problems


def test_the_page_waits_for_a_node_that_starts_later(
    browser: Any,
    start_node: Callable[..., Service],
    spawn_service: Callable[..., Service],
    port: int,
) -> None:
    """As under `agora up`, the dashboard may start before the node: the page says so, then
    recovers on its own (status, block stream) once the node answers."""
    node_port = free_port()
    dashboard = f"http://127.0.0.1:{port}"
    spawn_service(
        dashboard_command(f"http://127.0.0.1:{node_port}", port),
        ready_url=f"{dashboard}/config.json",
        name="dashboard",
    )
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{dashboard}/#/")
    page.wait_for_selector("#banner:not([hidden])", timeout=10_000)
    assert "does not answer" in (page.text_content("#banner") or "")

    start_node(port=node_port, block_time=0.3)
    page.wait_for_selector("#banner", state="hidden", timeout=15_000)
    page.wait_for_selector("#live[data-state=live]", timeout=20_000)
    first = height_of(page)
    wait_for_height_above(page, first)
    page.wait_for_selector("#recent-blocks", timeout=10_000)
