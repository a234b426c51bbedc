"""What ``agora up`` needs to run a gateway on the local network and hand out a demo key.

    fund_dev_gateway(node_url)                     # the faucet funds the dev key "gateway"
    args = gateway_command(node_url, data_dir / "gateway", port=8000,
                           serve={"minilm": 1, "tiny-llm": 2})
    supervisor.start("gateway", args)              # then wait for http://127.0.0.1:8000/health
    demo = create_demo_key("http://127.0.0.1:8000", node_url)   # {"key": "sk-agora-...", ...}

The gateway runs on its own dev key, ``gateway`` (coldkey ``Keypair.from_name("gateway")``,
hotkey ``gateway/hot``), not one of the genesis accounts, which ``agora up`` gives to miners and
the validator: a gateway and a miner must never share a hotkey. Start the gateway before the
miners (or give them ~12 s): miners read who may call them from the metagraph at most every
12 s, and the gateway registers its hotkey on each subnet it serves when it starts.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path

from agora.chain.client import LedgerClient
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.gateway.keys import create_demo_key
from agora.protocol.units import TOKEN

__all__ = ["DEV_GATEWAY_KEY", "create_demo_key", "fund_dev_gateway", "gateway_command"]

DEV_GATEWAY_KEY = "gateway"
"""The dev key that runs the local gateway (coldkey ``gateway``, hotkey ``gateway/hot``)."""


def fund_dev_gateway(node_url: str, dev_key: str = DEV_GATEWAY_KEY, tokens: int = 1000) -> int:
    """Have the dev faucet send ``tokens`` to the gateway's dev coldkey unless it holds half of
    that already (it pays the registration burns and the gateway's float). Returns its balance
    in units. Raises NodeError if the ledger refuses."""
    return asyncio.run(_fund(node_url, dev_key, tokens * TOKEN))


async def _fund(node_url: str, dev_key: str, units: int) -> int:
    target = Keypair.from_name(dev_key).address
    faucet = Keypair.from_name("faucet")
    async with LedgerClient(node_url) as ledger:
        balance = (await ledger.account(target)).balance
        if balance >= units // 2:
            return balance
        chain_id = (await ledger.status()).chain_id
        nonce = await ledger.next_nonce(faucet.address)
        tx = sign_transaction(faucet, chain_id, "transfer", nonce, {"to": target, "amount": units})
        await ledger.submit_and_wait(tx)
        return (await ledger.account(target)).balance


def gateway_command(
    node_url: str,
    data_dir: Path,
    *,
    port: int = 8000,
    host: str = "127.0.0.1",
    serve: Mapping[str, int] | None = None,
    dev_key: str = DEV_GATEWAY_KEY,
    config: Path | None = None,
) -> list[str]:
    """The command line of a dev gateway: ``serve`` maps built-in model names (``minilm``,
    ``tiny-llm``) to the netuids that serve them (default: the built-in map)."""
    args = [
        sys.executable, "-m", "agora.gateway", "start", "--dev-key", dev_key,
        "--node", node_url, "--host", host, "--port", str(port), "--data-dir", str(data_dir),
    ]  # fmt: skip
    for name, netuid in (serve or {}).items():
        args += ["--serve", f"{name}={netuid}"]
    if config is not None:
        args += ["--config", str(config)]
    return args
