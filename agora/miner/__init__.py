"""The miner: serves a model over signed HTTP and signs a receipt for every answer.

    miner = await Miner.create(MinerConfig(netuid=1, model="embed:minilm"), hotkey,
                               coldkey=lambda: wallet.coldkey(password))
    await miner.serve()                       # until SIGTERM; drains in-flight requests

    async with MinerClient(url, my_hotkey, miner_hotkey) as client:   # the calling side
        answer, receipt = await client.embed(["hello"])

Modules: the HTTP contract :mod:`agora.miner.schema`; the routes :mod:`agora.miner.app`; the work
(engine, token counts, price, receipt) :mod:`agora.miner.core`; the model in its own process
:mod:`agora.miner.engine_host`; registration, endpoint and caller standing on the ledger
:mod:`agora.miner.ledger`; the service and its shutdown :mod:`agora.miner.service`;
``agora miner start`` :mod:`agora.miner.cli`; a calling client :mod:`agora.miner.client`;
deliberately bad miners for tests :mod:`agora.miner.adversary`. Errors are drawn in
:mod:`agora.miner.errors`.
"""

from agora.miner.client import GenerationStream, MinerClient, fetch_health
from agora.miner.config import MinerConfig
from agora.miner.core import MinerCore
from agora.miner.errors import (
    BurnTooHigh,
    CannotPayBurn,
    HotkeyNotRegistered,
    LedgerSetupError,
    MinerCallError,
    MinerConfigError,
    MinerError,
    SubnetNotFound,
    TransactionFailed,
)
from agora.miner.pricing import answer_price, parse_price
from agora.miner.service import Miner, load_miner_engine

__all__ = [
    "BurnTooHigh",
    "CannotPayBurn",
    "GenerationStream",
    "HotkeyNotRegistered",
    "LedgerSetupError",
    "Miner",
    "MinerCallError",
    "MinerClient",
    "MinerConfig",
    "MinerConfigError",
    "MinerCore",
    "MinerError",
    "SubnetNotFound",
    "TransactionFailed",
    "answer_price",
    "fetch_health",
    "load_miner_engine",
    "parse_price",
]
