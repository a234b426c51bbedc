"""A miner started through its CLI as a real process: it registers (showing the burn first),
announces its endpoint, serves, and on SIGTERM finishes the requests in flight (a stream and a
plain request, both slow) with 200 and valid receipts before exiting 0."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from agora.chain.client import LedgerClient
from agora.chain.testing import free_port
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.miner import MinerClient
from agora.net import Receipt, split_stream, verify_receipt

if TYPE_CHECKING:
    from tests.conftest import Service

CALLER = Keypair.from_name("bob/hot")
MINER = Keypair.from_name("charlie/hot")


async def _send(client: LedgerClient, key: Keypair, kind: str, body: dict[str, Any]) -> None:
    chain_id = (await client.status()).chain_id
    tx = sign_transaction(key, chain_id, kind, await client.next_nonce(key.address), body)
    info = await client.wait_for_tx(await client.submit(tx), timeout=30)
    assert info.status == "included", info


async def _subnet_with_caller(url: str) -> int:
    async with LedgerClient(url) as client:
        await _send(client, Keypair.from_name("alice"), "create_subnet", {})
        netuid = (await client.subnets())[-1].netuid
        await _send(
            client,
            Keypair.from_name("bob"),
            "register",
            {"netuid": netuid, "hotkey": CALLER.address},
        )
        return netuid


async def _health(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        return dict((await http.get("/health")).json())


async def _wait_in_flight(url: str, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while (await _health(url))["in_flight"] < count:
        assert time.monotonic() < deadline, "the requests never reached the miner"
        await asyncio.sleep(0.02)


@pytest.mark.slow
@pytest.mark.anyio
async def test_sigterm_finishes_in_flight_requests_then_exits_0(
    start_node: Callable[..., Service],
    spawn_service: Callable[..., Service],
    tmp_path: Path,
) -> None:
    node = start_node(block_time=0.2)
    netuid = await _subnet_with_caller(node.url)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    miner = spawn_service(
        [sys.executable, "-m", "agora.miner", "start", "--dev-key", "charlie",
         "--subnet", str(netuid), "--model", "generate:tiny", "--cheat", "slow",
         "--port", str(port), "--node", node.url, "--data-dir", str(tmp_path / "miner"),
         "--grace", "20"],
        ready_url=f"{url}/health", timeout=90, name="miner",
    )  # fmt: skip
    output = miner.output()
    assert "burns 0.1 tokens" in output  # the burn was shown before it was paid
    assert "announced http://127.0.0.1:" in output

    async with LedgerClient(node.url) as ledger:
        neurons = {n.hotkey: n for n in (await ledger.metagraph(netuid)).neurons}
    endpoint = neurons[MINER.address].endpoint
    assert endpoint is not None and endpoint.port == port

    async with MinerClient(url, CALLER, MINER.address) as client:
        stream = client.stream("Keep streaming after SIGTERM", max_tokens=32)
        events = aiter(stream)
        first = await anext(events)  # the stream is under way
        plain = asyncio.create_task(client.generate("And finish me too", max_tokens=32))
        await _wait_in_flight(url, 2)
        miner.proc.send_signal(signal.SIGTERM)
        rest = [event async for event in events]
        answer, receipt = await plain  # the client checked the receipt
    assert stream.receipt is not None  # and this one against the whole stream
    assert len([first, *rest]) == 32 == stream.receipt.completion_tokens
    verify_receipt(stream.receipt, response_body=stream.raw, miner=MINER.address)
    assert split_stream(stream.raw)[1] == stream.receipt
    assert len(answer.token_ids) == 32 and isinstance(receipt, Receipt)

    assert miner.wait(30) == 0
    with pytest.raises(httpx.ConnectError):
        await _health(url)
    assert "stopped after 2 answers" in miner.output()


def test_cli_help_and_usage_errors() -> None:
    from typer.testing import CliRunner

    from agora.miner.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["start", "--help"])
    assert result.exit_code == 0
    assert "agora miner start --wallet alice --subnet 1" in result.output
    result = runner.invoke(app, ["start", "--subnet", "1"])
    assert result.exit_code == 1
    assert "--wallet NAME" in result.output
    result = runner.invoke(app, ["start", "--subnet", "1", "--dev-key", "x", "--price", "-1"])
    assert result.exit_code == 1 and "--price" in result.output
    result = runner.invoke(app, ["start", "--subnet", "1", "--dev-key", "x", "--cheat", "evil"])
    assert result.exit_code == 1 and "random, wrong-model, lazy, slow" in result.output
    result = runner.invoke(app, ["start", "--subnet", "1", "--dev-key", "x", "--host", "0.0.0.0"])
    assert result.exit_code == 1 and "--external-ip" in result.output
    port = free_port()
    result = runner.invoke(app, ["status", "--endpoint", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 1 and "no miner answers" in result.output
    node = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["start", "--subnet", "1", "--dev-key", "x", "--node", node])
    assert result.exit_code == 1 and "agora node start --dev" in result.output
