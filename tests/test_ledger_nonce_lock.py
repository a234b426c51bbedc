"""Transactions signed at the same time by one key through one ``LedgerClient`` all land.

A validator signs with one hotkey from several tasks of one process (weights, dispute openings,
votes). Each reads the key's next nonce from the node and then submits; without the client's
``nonce_lock`` two tasks read the same nonce and the node refuses the second with
``bad_nonce`` (seen in tests/test_adversaries_e2e.py as lost disputes and refused weights).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from agora.chain.client import LedgerClient
from agora.crypto.keys import Keypair
from agora.protocol.units import TOKEN
from agora.validator.ledger import transact


def test_concurrent_transactions_of_one_key_all_land(start_node: Callable[..., object]) -> None:
    node = start_node()
    faucet = Keypair.from_name("faucet")
    recipients = [Keypair.from_name(f"nonce-lock-{i}").address for i in range(4)]

    async def go() -> list[int]:
        async with LedgerClient(node.url) as client:  # type: ignore[attr-defined]
            chain_id = (await client.status()).chain_id
            infos = await asyncio.gather(
                *(
                    transact(client, chain_id, faucet, "transfer", {"to": to, "amount": TOKEN})
                    for to in recipients
                )
            )
            assert all(info is not None and info.status == "included" for info in infos), infos
            return [(await client.account(to)).balance for to in recipients]

    assert asyncio.run(go()) == [TOKEN] * len(recipients)
