"""The node's read routes for spot checks and disputes (mounted by ``api.py``).

    GET /v1/disputes?netuid=&miner=&status=&limit=    disputes, newest first
    GET /v1/disputes/{id}                             one dispute, with where its vote stands
    GET /v1/subnets/{netuid}/audit                    audit parameters and the honesty condition
    GET /v1/blocks/after/{timestamp_ms}               a receipt's deciding block (404 until then)

Disputes are opened and voted with ordinary signed transactions (``dispute_open``,
``dispute_vote``) through ``POST /v1/transactions``.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI, Query

from agora.chain import models
from agora.chain.api import ApiError, _errors
from agora.chain.node import Node
from agora.protocol.audit import DEFAULT_ECONOMICS, Economics, honesty_report
from agora.protocol.codec import is_hex
from agora.protocol.dispute_state import OPEN, Dispute
from agora.protocol.disputes import tally
from agora.protocol.state import State

MAX_DISPUTES_PER_PAGE = 500


def dispute_json(state: State, dispute: Dispute) -> dict[str, Any]:
    """A dispute as stored, each vote with the stake it holds now, and the tally while open."""
    data = dispute.to_json()
    subnet = state.subnets.get(dispute.netuid)
    for vote in data["votes"]:
        vote["stake_now"] = state.hotkey_stake(vote["hotkey"])
        uid = None if subnet is None else subnet.uid_of(vote["hotkey"])
        vote["counts"] = (
            uid is not None and subnet is not None and subnet.neurons[uid].validator_permit
        )
    if dispute.status == OPEN:
        guilty, innocent, total = tally(state, dispute)
        data["tally"] = {
            "guilty": guilty,
            "not_guilty": innocent,
            "total": total,
            "needed": total // 2,
        }
    return data


def first_block_after(node: Node, timestamp_ms: int) -> int | None:
    """The height of the first stored block whose timestamp is after ``timestamp_ms``: a binary
    search over heights, since block timestamps never go backwards."""
    low, high = 1, node.height
    if high < 1 or node.store.summaries(high, 1)[0].timestamp <= timestamp_ms:
        return None
    while low < high:
        middle = (low + high) // 2
        if node.store.summaries(middle, 1)[0].timestamp > timestamp_ms:
            high = middle
        else:
            low = middle + 1
    return low


def add_dispute_routes(app: FastAPI, node: Node) -> None:
    """Read routes of spot checks and disputes."""

    @app.get(
        "/v1/disputes",
        response_model=models.DisputeList,
        summary="Disputes",
        tags=["disputes"],
        responses=_errors(400),
    )
    async def disputes(
        netuid: int | None = Query(None, description="Only this subnet's."),
        miner: str | None = Query(None, description="Only those accusing this miner hotkey."),
        status: Literal["open", "upheld", "rejected"] | None = Query(None),
        limit: int = Query(50, ge=1, le=MAX_DISPUTES_PER_PAGE),
    ) -> Any:
        """Disputes, newest first, with their receipts, evidence, votes and outcomes. A
        validator polls `status=open` for disputes to re-check and vote on."""
        if miner is not None and not is_hex(miner, 64):
            raise ApiError(400, "bad_address", "miner is a hotkey: 64 lowercase hex characters")
        state = node.state
        found = []
        for dispute_id in sorted(state.disputes.disputes, reverse=True):
            dispute = state.disputes.disputes[dispute_id]
            if (
                (netuid is None or dispute.netuid == netuid)
                and (miner is None or dispute.miner == miner)
                and (status is None or dispute.status == status)
            ):
                found.append(dispute_json(state, dispute))
                if len(found) == limit:
                    break
        return {"height": state.height, "disputes": found}

    @app.get(
        "/v1/disputes/{dispute_id}",
        response_model=models.Dispute,
        summary="One dispute",
        tags=["disputes"],
        responses=_errors(400, 404),
    )
    async def dispute(dispute_id: int) -> Any:
        """Status (open, upheld, rejected), votes with stakes, deadline, receipt, evidence and
        amounts: slashed, burned, paid to each guilty voter, and where the deposit went."""
        state = node.state
        found = state.disputes.disputes.get(dispute_id)
        if found is None:
            raise ApiError(404, "not_found", f"no dispute {dispute_id}; list them at /v1/disputes")
        return dispute_json(state, found)

    @app.get(
        "/v1/subnets/{netuid}/audit",
        response_model=models.AuditReport,
        summary="Spot-check parameters and the honesty condition",
        tags=["subnets", "disputes"],
        responses=_errors(400, 404),
    )
    async def audit(
        netuid: int,
        reward: int = Query(
            DEFAULT_ECONOMICS.reward,
            ge=0,
            description="R: what one answer pays, in units (default 0.001 token).",
        ),
        honest_cost: int | None = Query(
            None, ge=0, description="C: what honest work costs per answer (default: R)."
        ),
        cheat_cost: int = Query(0, ge=0, description="c: what a cheat costs per answer."),
        detection_ppm: int = Query(
            DEFAULT_ECONOMICS.detection_ppm,
            ge=0,
            le=1_000_000,
            description="d: audit detection probability, ppm.",
        ),
    ) -> Any:
        """The audit rate p, slash, deposit, dispute period and window the subnet runs with,
        and for each neuron the honesty condition `p >= (C - c) / (d (R + S))` with the stake
        it actually carries (S = slash_ppm of it): a miner without stake is not deterred."""
        state = node.state
        subnet = state.subnets.get(netuid)
        if subnet is None:
            known = ", ".join(str(n) for n in sorted(state.subnets)) or "none yet"
            raise ApiError(404, "unknown_subnet", f"no subnet {netuid}; existing: {known}")
        economics = Economics(
            reward=reward,
            honest_cost=reward if honest_cost is None else honest_cost,
            cheat_cost=cheat_cost,
            detection_ppm=detection_ppm,
        )
        miners = [(n.uid, n.hotkey, state.hotkey_stake(n.hotkey)) for n in subnet.neurons]
        report = honesty_report(subnet.hyperparams.audit_params(), miners, economics)
        for row, neuron in zip(report["miners"], subnet.neurons, strict=True):
            row["validator_permit"] = neuron.validator_permit
        return {"netuid": netuid, "height": state.height, **report}

    @app.get(
        "/v1/blocks/after/{timestamp_ms}",
        response_model=models.BlockAfter,
        summary="The first block after a time: a receipt's deciding block",
        tags=["chain", "disputes"],
        responses=_errors(400, 404),
    )
    async def block_after(timestamp_ms: int) -> Any:
        """Height, hash and timestamp of the first block whose timestamp is after
        `timestamp_ms`: its hash seeds the audit draw of a receipt signed at that time
        (`agora.protocol.audit.is_audited`). 404 until such a block exists."""
        if timestamp_ms < 0:
            raise ApiError(400, "bad_request", "timestamp_ms is milliseconds since the epoch")
        height = first_block_after(node, timestamp_ms)
        if height is None:
            raise ApiError(
                404,
                "unknown_block",
                f"no block after {timestamp_ms} yet (head at {node.height}); ask again after the "
                "next block",
            )
        summary = node.store.summaries(height, 1)[0]
        return {"height": summary.height, "hash": summary.hash, "timestamp": summary.timestamp}
