"""A miner's settings: everything ``agora miner start`` takes, except its keys.

Keys are never part of the configuration: :meth:`agora.miner.service.Miner.create` takes the
hotkey (and, only if it has to register, a way to get the coldkey) as arguments.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from agora.chain.client import DEFAULT_URL
from agora.miner.errors import MinerConfigError
from agora.miner.pricing import DEFAULT_PRICE, parse_price
from agora.protocol.codec import is_hex

__all__ = ["MinerConfig"]

_WILDCARDS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class MinerConfig:
    """What one miner serves, where, for how much, and to whom.

    ``price_per_1k`` is in units (10^9 per token) per 1,000 tokens; build it from the CLI's
    ``--price`` with :func:`agora.miner.pricing.parse_price`. ``port`` 0 takes a free port (the
    one announced is the one bound). ``external_ip`` is the address announced on the ledger,
    by default ``host`` (which must then be a concrete IP address).
    """

    netuid: int
    model: str = "embed:minilm"
    data_dir: Path = field(default_factory=lambda: Path.home() / ".agora")
    host: str = "127.0.0.1"
    port: int = 8091
    external_ip: str | None = None
    node_url: str = DEFAULT_URL
    price_per_1k: int = field(default_factory=lambda: parse_price(DEFAULT_PRICE))
    register: bool = True
    max_burn: int | None = None
    announce: bool = True
    min_caller_stake: int = 0
    allow: frozenset[str] = frozenset()
    cheat: str | None = None
    ray: str | None = None
    # torch's intra-op threads (None: torch's default less one, at least 1); see load_miner_engine
    threads: int | None = None
    # run the model in a child process (see agora.miner.engine_host); False: in this process
    engine_process: bool = True
    # batching: up to this many generation requests, or embedding texts, per model call
    max_batch_size: int = 32
    max_embed_texts: int = 128
    max_wait_ms: float = 5.0
    # the wire guard: per-caller token bucket, body limit
    rate_per_second: float = 200.0
    burst: int = 400
    max_body_bytes: int = 4 << 20
    standing_refresh_s: float = 12.0
    # graceful shutdown: in-flight requests get this long to finish after SIGTERM
    grace_s: float = 30.0
    tx_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.netuid, bool) or not isinstance(self.netuid, int) or self.netuid < 0:
            raise MinerConfigError(
                f"--subnet must be a netuid (an integer >= 0), not {self.netuid}"
            )
        if not 0 <= self.port <= 65535:
            raise MinerConfigError(f"--port {self.port} is outside 0..65535")
        if self.price_per_1k < 0:
            raise MinerConfigError("the price must not be negative")
        if self.min_caller_stake < 0:
            raise MinerConfigError("--min-caller-stake must not be negative")
        object.__setattr__(self, "allow", frozenset(self.allow))
        for hotkey in self.allow:
            if not is_hex(hotkey, 64):
                raise MinerConfigError(
                    f"--allow {hotkey!r} is not a hotkey address (64 lowercase hex characters)"
                )
        if self.max_batch_size < 1 or self.max_embed_texts < 1:
            raise MinerConfigError("batch sizes must be at least 1")
        if self.threads is not None and self.threads < 1:
            raise MinerConfigError("--threads must be at least 1")
        if self.grace_s < 0:
            raise MinerConfigError("--grace must not be negative")
        if self.cheat is not None:
            from agora.miner.adversary import CHEAT_MODES

            if self.cheat not in CHEAT_MODES:
                raise MinerConfigError(
                    f"unknown --cheat mode {self.cheat!r}; choose one of {', '.join(CHEAT_MODES)}"
                )

    def announced_ip(self) -> str:
        """The IP address to announce in the ``serve`` transaction.

        Raises:
            MinerConfigError: ``host`` is a wildcard or a name and no ``external_ip`` is given.
        """
        ip = self.external_ip if self.external_ip is not None else self.host
        if ip == "localhost":
            ip = "127.0.0.1"
        if ip in _WILDCARDS:
            raise MinerConfigError(
                f"--host {self.host} listens on every interface, so the address to announce is "
                "unknown: pass --external-ip with the IP callers should use"
            )
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise MinerConfigError(
                f"{ip!r} is not an IP address; the ledger stores endpoints as IPs: pass "
                "--external-ip with the IP callers should use"
            ) from None
        return ip
