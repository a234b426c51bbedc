"""The miner: serves a model over signed HTTP and signs a receipt for every answer.

    miner = await Miner.create(MinerConfig(netuid=1, model="embed:minilm"), hotkey,
                               coldkey=lambda: wallet.coldkey(password))
    await miner.serve()                       # until SIGTERM; drains in-flight requests

    async with MinerClient(url, my_hotkey, miner_hotkey) as client:   # the calling side
        answer, receipt = await client.embed(["hello"])

The HTTP contract is :mod:`agora.miner.schema`; ``agora miner start`` is :mod:`agora.miner.cli`;
deliberately bad miners for tests are :mod:`agora.miner.adversary`. Errors are drawn in
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
