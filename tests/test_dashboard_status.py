"""``agora status``: the network on one screen, against a real node (and a devnet.json)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from agora.chain.client import LedgerClient
from agora.chain.testing import free_port
from agora.cli import app
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction

runner = CliRunner()


async def make_subnet(url: str) -> None:
    async with LedgerClient(url) as client:
        chain = (await client.status()).chain_id
        alice = Keypair.from_name("alice")
        nonce = await client.next_nonce(alice.address)
        await client.submit_and_wait(sign_transaction(alice, chain, "create_subnet", nonce, {}))


def test_status_summarises_the_chain_subnets_and_local_services(
    start_node: Callable[..., object], tmp_path: Path
) -> None:
    node = start_node(block_time=0.3)
    url = node.url  # type: ignore[attr-defined]
    asyncio.run(make_subnet(url))
    dead = f"http://127.0.0.1:{free_port()}"
    (tmp_path / "devnet.json").write_text(
        json.dumps(
            {"node": url, "dashboard": dead, "miners": {"m1": dead}, "validator_apis": {"1": dead}}
        )
    )
    result = runner.invoke(app, ["status", "--data-dir", str(tmp_path)], terminal_width=160)
    assert result.exit_code == 0, result.output
    text = result.output
    assert "agora-dev" in text and url in text  # the node came from devnet.json
    assert "SN1" in text and "next epoch" in text
    assert "dashboard" in text and "down" in text and "miner m1" in text
    assert "validator SN1" in text
    assert "watch it live" in text

    # Without a local network, it says how to start one; a dead node is an error with advice.
    empty = tmp_path / "none"
    result = runner.invoke(app, ["status", "--node", url, "--data-dir", str(empty)])
    assert result.exit_code == 0 and "agora up" in result.output
    result = runner.invoke(app, ["status", "--node", dead, "--data-dir", str(empty)])
    assert result.exit_code == 1 and "agora node start" in result.output
