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

import httpx
import pytest

from agora.chain.client import LedgerClient
from agora.chain.testing import free_port
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.gateway.devnet import fund_dev_gateway, gateway_command
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


def dashboard_command(node_url: str, port: int, gateway: str | None = None) -> list[str]:
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
        *(["--gateway", gateway] if gateway else []),
    ]


def validator_command(node_url: str, netuid: int, port: int, data_dir: Path) -> list[str]:
    """alice/hot (registered, staked) as a real validator with its public API on ``port``."""
    return [
        sys.executable,
        "-m",
        "agora.validator",
        "start",
        "--dev-key",
        VALIDATOR,
        "--subnet",
        str(netuid),
        "--node",
        node_url,
        "--data-dir",
        str(data_dir),
        "--no-register",
        "--probe-interval",
        "1",
        "--timeout",
        "2",
        "--http-port",
        str(port),
    ]


# The test opens a receipt and a dispute that do not exist: the browser logs their 404, which
# the page answers with "not available". Any other failed load is a problem.
EXPECTED_404 = re.compile(r"/(node/v1/disputes/\d+|gateway/v1/gateway/receipts/[0-9a-f]{64})$")


def console_problem(message: Any) -> str:
    """The console error as a problem to report, or "" when it is none."""
    if message.type != "error":
        return ""
    url = (message.location or {}).get("url", "")
    if "404" in message.text and EXPECTED_404.search(url):
        return ""
    return f"console: {message.text} ({url})"


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
    tmp_path: Path,
) -> None:
    node = start_node(block_time=0.3)
    with ThreadPoolExecutor(1) as thread:  # Playwright's sync API owns this thread's event loop
        netuid = thread.submit(asyncio.run, build_subnet(node.url)).result(timeout=60)
        thread.submit(fund_dev_gateway, node.url).result(timeout=60)
    # A real gateway serving the subnet; two calls with a wrong key are refused (401) and show
    # in its public figures.
    gateway_port = free_port()
    gateway = f"http://127.0.0.1:{gateway_port}"
    spawn_service(
        gateway_command(
            node.url, tmp_path / "gateway", port=gateway_port, serve={"minilm": netuid}
        ),
        ready_url=f"{gateway}/health",
        timeout=120,
        name="gateway",
    )
    for _ in range(2):
        refused = httpx.post(
            f"{gateway}/v1/embeddings",
            headers={"authorization": "Bearer sk-wrong"},
            json={"model": "minilm", "input": "hello"},
        )
        assert refused.status_code == 401
    # A real validator probes the other three hotkeys (nothing serves at their endpoints, so it
    # records failures) and announces its public API, where the dashboard finds it.
    validator_port = free_port()
    spawn_service(
        validator_command(node.url, netuid, validator_port, tmp_path / "validator"),
        ready_url=f"http://127.0.0.1:{validator_port}/v1/validator",
        timeout=120,
        env={"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"},
        name="validator",
    )
    dashboard = f"http://127.0.0.1:{port}"
    spawn_service(
        dashboard_command(node.url, port, gateway),
        ready_url=f"{dashboard}/config.json",
        name="dashboard",
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda m: problems.append(console_problem(m)))

    # The subnet's metagraph lists every hotkey the test registered.
    page.goto(f"{dashboard}/#/subnet/{netuid}")
    # the four the test registered, and the gateway's (it registers on the subnets it serves)
    registered = {hotkey(name).address for name in [*MEMBERS, "gateway"]}
    page.wait_for_function(
        "n => document.querySelectorAll('#metagraph tbody tr[data-hotkey]').length === n",
        arg=len(registered),
        timeout=15_000,
    )
    shown = {
        row.get_attribute("data-hotkey") for row in page.query_selector_all("#metagraph tbody tr")
    }
    assert shown == registered
    assert "alice/hot" in (page.text_content("#metagraph") or "")  # dev keys are named
    page.wait_for_selector("#heatmap canvas:not([hidden])", timeout=10_000)  # weights drawn
    # Emission over time comes from the node's epoch history, not from what the page saw.
    page.wait_for_selector("#emission-chart canvas:not([hidden])", timeout=15_000)
    assert "node's epoch history" in (page.text_content("#emission-source") or "")
    # What the validator measured, read from the API it announced on the ledger.
    page.wait_for_selector("#validator-measurements tbody tr", timeout=30_000)
    measured = {
        row.get_attribute("data-hotkey")
        for row in page.query_selector_all("#validator-measurements tbody tr")
    }
    assert measured >= {hotkey(name).address for name in MEMBERS if name != VALIDATOR}
    assert hotkey(VALIDATOR).address not in measured
    assert "alice/hot" in (page.text_content("#measurements") or "")  # who measured, a link
    # The gateway has served nothing yet: the receipts section says so.
    page.wait_for_selector("#subnet-receipts .empty", timeout=10_000)
    assert "No receipts yet" in (page.text_content("#subnet-receipts") or "")

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
    # As a miner: the validator's verdicts on it, receipts and disputes (or why there are none).
    page.wait_for_selector("#miner-measurements tbody tr", timeout=15_000)
    assert "alice/hot" in (page.text_content("#miner-measurements") or "")
    page.wait_for_selector("#miner-receipts-panel .empty", timeout=10_000)
    page.wait_for_selector(
        "#miner-disputes-panel .placeholder, #miner-disputes-panel .empty, #disputes-table",
        timeout=10_000,
    )
    page.screenshot(path=str(ARTIFACTS / "dashboard-account.png"), full_page=True)

    # The validator's own page shows what it measured, from its public API.
    page.goto(f"{dashboard}/#/account/{hotkey(VALIDATOR).address}")
    page.wait_for_selector("#validator-panel #validator-measurements tbody tr", timeout=15_000)
    assert page.query_selector("#miner-panel") is None  # a validator, not a miner

    # A receipt's and a dispute's page exist, and say what is missing.
    page.goto(f"{dashboard}/#/receipt/{'ab' * 32}")
    page.wait_for_selector("#receipt-fields .placeholder", timeout=10_000)
    assert "no receipt with this hash" in (page.text_content("#receipt-fields") or "").lower()
    page.goto(f"{dashboard}/#/dispute/1")
    page.wait_for_selector("#dispute-fields .placeholder, #dispute-fields .kv", timeout=10_000)

    # The overview: chain figures, live blocks with their transactions; a block opens its page.
    page.locator("nav.main a[data-nav=overview]").click()
    page.wait_for_selector("#recent-txs", timeout=10_000)
    issuance = page.text_content("[data-testid=issuance]") or ""
    assert re.fullmatch(r"\d{1,3}(,\d{3})+\.\d{2}", issuance.strip()), issuance
    page.wait_for_timeout(600)  # a couple more blocks, for a livelier picture
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    # The oldest transaction listed opens its block, which shows it.
    last = page.locator("#recent-txs tbody tr:last-child")
    kind = (last.locator("td:nth-child(2) .chip").text_content() or "").strip()
    assert kind
    link = last.locator("td:first-child a")
    block = int(re.sub(r"\D", "", link.text_content() or ""))
    link.click()
    page.wait_for_selector("#block-txs", timeout=10_000)
    assert page.text_content("#block-height") == f"#{block}"
    assert kind in (page.text_content("#block-txs") or "")

    # The gateway: its traffic, the two refusals by code, spend per key, receipts.
    page.locator("nav.main a[data-nav=gateway]").click()
    page.wait_for_function(
        "() => document.querySelector('[data-testid=gateway-errors]')?.textContent === '2'",
        timeout=15_000,
    )
    assert "invalid_api_key" in (page.text_content("#gateway-error-table") or "")
    assert "No key has spent anything today" in (page.text_content("#gateway-spend") or "")
    assert "minilm" in (page.text_content("#gateway-model-table") or "")
    page.wait_for_selector("#gateway-receipts .empty", timeout=10_000)
    page.screenshot(path=str(ARTIFACTS / "dashboard-gateway.png"), full_page=True)
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

    problems = [p for p in problems if p]
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
