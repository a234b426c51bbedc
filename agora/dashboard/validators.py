"""Finding validators' public APIs through the metagraph, and reading what they measured.

    GET /validators/{netuid}    {"netuid", "validators": [{uid, hotkey, url, scores...}], ...}

A validator started with ``--http-port`` announces its read-only API as its hotkey's endpoint
(the ``serve`` transaction miners use). The page cannot reach those addresses itself (the CSP
keeps it same-origin, and they may not be reachable from the browser), so the dashboard reads
the node's metagraph, asks each neuron with an endpoint (a permit comes only with the first
epoch, so it is not required) for
``GET /v1/validator/scores``, and returns the answers whose hotkey and subnet match the ledger.

Only that one fixed path is ever fetched, with GET and a short timeout, on addresses the
ledger lists: the dashboard cannot be made to fetch anything else. An endpoint that is not a
validator (a miner answers 404, or nothing answers) is remembered for
:data:`NOT_A_VALIDATOR_TTL` seconds so that a page refreshing every few seconds does not ask
miners again and again. A validator that answered before and stops answering is listed with
its ``error``, so the page can say that it is down.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

__all__ = ["ValidatorDirectory"]

SCORES_PATH = "/v1/validator/scores"
NOT_A_VALIDATOR_TTL = 60.0
TIMEOUT = 3.0


def _url(endpoint: dict[str, Any]) -> str:
    ip = str(endpoint["ip"])
    host = f"[{ip}]" if ":" in ip else ip
    return f"{endpoint.get('protocol', 'http')}://{host}:{int(endpoint['port'])}"


class ValidatorDirectory:
    """Reads the node's metagraph and the validators' public APIs it points to."""

    def __init__(self, node_url: str, client: httpx.AsyncClient) -> None:
        self.node_url = node_url.rstrip("/")
        self.client = client
        self._not_validators: dict[tuple[str, str], float] = {}
        self._known: set[tuple[str, str]] = set()  # (hotkey, url) that answered as a validator

    async def read(self, netuid: int) -> tuple[int, dict[str, Any]]:
        """``(status, body)`` for ``GET /validators/{netuid}``: 200 with what was found (an
        unreachable validator is listed with its ``error``), or the node's error."""
        try:
            response = await self.client.get(
                f"{self.node_url}/v1/subnets/{netuid}/metagraph", timeout=TIMEOUT
            )
        except httpx.HTTPError as error:
            return 502, _error("upstream_unreachable", f"the node does not answer: {error}")
        if response.status_code != 200:
            try:
                return response.status_code, response.json()
            except ValueError:
                return 502, _error("bad_upstream", "the node did not answer with JSON")
        graph = response.json()
        now = time.monotonic()
        candidates = [
            n
            for n in graph.get("neurons", [])
            if n.get("endpoint")
            and self._not_validators.get((n["hotkey"], _url(n["endpoint"])), 0.0) < now
        ]
        found = await asyncio.gather(*(self._ask(netuid, n, now) for n in candidates))
        return 200, {
            "netuid": netuid,
            "block": graph.get("block"),
            "validators": [v for v in found if v is not None],
        }

    async def _ask(self, netuid: int, neuron: dict[str, Any], now: float) -> dict[str, Any] | None:
        url = _url(neuron["endpoint"])
        base = {"uid": neuron["uid"], "hotkey": neuron["hotkey"], "url": url}
        key = (neuron["hotkey"], url)
        try:
            response = await self.client.get(url + SCORES_PATH, timeout=TIMEOUT)
        except httpx.HTTPError as error:
            if key in self._known:  # a validator we have read before: say it is down
                return {**base, "error": f"does not answer ({type(error).__name__})"}
            self._not_validators[key] = now + NOT_A_VALIDATOR_TTL  # a miner that is down
            return None
        try:
            body = response.json() if response.status_code == 200 else None
        except ValueError:
            body = None
        if (
            not isinstance(body, dict)
            or body.get("hotkey") != neuron["hotkey"]
            or body.get("netuid") != netuid
            or not isinstance(body.get("scores"), list)
        ):
            # a miner, or something else: not this hotkey's validator API
            self._known.discard(key)
            self._not_validators[key] = now + NOT_A_VALIDATOR_TTL
            return None
        self._known.add(key)
        return {**base, **body, "uid": neuron["uid"]}


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}
