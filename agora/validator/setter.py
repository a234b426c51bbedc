"""When and what weights a validator sends: every tempo, directly or by commit and reveal.

``WeightSetter.step(height)`` is called on new blocks; it does at most one thing per call:

* Direct weights: once ``max(tempo, weights_rate_limit)`` blocks have passed since the
  validator's ``last_update`` (on the ledger), compute weights from the score book
  (:func:`agora.validator.weights.compute_weights`, only uids whose stored hotkey is still the
  metagraph's) and send ``set_weights``.
* Commit-reveal subnets: commit ``weights_commit_hash(netuid, hotkey, uids, weights, salt)`` with a
  fresh salt, the commit saved in the score book *before* it is submitted (with the transaction's
  hash, so that a restart finds out which block took it); once the reveal window opens
  (``commit_reveal_period * tempo`` blocks later, for as many blocks) reveal it, then commit again.
  A commit whose window passed is dropped and replaced.
* Without a validator permit (the epoch gives permits to the top ``max_validators`` stakes), below
  ``min_validator_stake``, not registered, or with no positive score: skip, with one log line per
  distinct reason, and look again at the next epoch (or block).

Between calls it remembers the next block worth looking at (``next_check``), so most blocks cost
nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import replace
from typing import Any

from agora.chain.client import LedgerClient
from agora.chain.errors import NodeError
from agora.chain.models import Metagraph, NeuronInfo, Subnet
from agora.crypto.keys import Keypair
from agora.protocol.units import format_amount
from agora.protocol.weights import weights_commit_hash
from agora.validator.ledger import transact
from agora.validator.store import PendingCommit, ScoreBook
from agora.validator.weights import NoWeights, compute_weights

__all__ = ["WeightSetter"]

log = logging.getLogger("agora.validator")


def _hp(subnet: Subnet, name: str) -> Any:
    return subnet.hyperparams[name]


class WeightSetter:
    """The weights schedule of one validator hotkey on one subnet."""

    def __init__(
        self,
        ledger: LedgerClient,
        chain_id: str,
        hotkey: Keypair,
        netuid: int,
        book: ScoreBook,
    ) -> None:
        self.ledger = ledger
        self.chain_id = chain_id
        self.hotkey = hotkey
        self.netuid = netuid
        self.book = book
        self.next_check = 0
        self.last_status = ""
        self._last_skip: str | None = None
        self._lock = asyncio.Lock()

    def _skip(self, reason: str) -> str:
        if reason != self._last_skip:
            log.info("not setting weights: %s", reason)
            self._last_skip = reason
        return f"skipped: {reason}"

    def _eligibility(self, me: NeuronInfo, subnet: Subnet) -> str | None:
        """Why this validator may not set weights now, or None."""
        if not me.validator_permit:
            return (
                f"no validator permit yet (the epoch gives permits to the top "
                f"{_hp(subnet, 'max_validators')} stakes; this hotkey has "
                f"{format_amount(me.stake)} tokens; next epoch at block {subnet.next_epoch_block})"
            )
        minimum = int(_hp(subnet, "min_validator_stake"))
        if me.stake < minimum:
            return (
                f"stake {format_amount(me.stake)} is below the subnet's min_validator_stake "
                f"{format_amount(minimum)}"
            )
        return None

    def current_weights(
        self, graph: Metagraph, subnet: Subnet, self_uid: int
    ) -> tuple[list[int], list[int]]:
        """The weights the scores call for now (raises NoWeights)."""
        hotkeys = {n.uid: n.hotkey for n in graph.neurons}
        scores = {
            uid: row.score
            for uid, row in self.book.scores(self.netuid).items()
            if hotkeys.get(uid) == row.hotkey
        }
        return compute_weights(
            scores,
            graph.n,
            self_uid=self_uid,
            min_allowed_weights=int(_hp(subnet, "min_allowed_weights")),
            max_weight_limit=int(_hp(subnet, "max_weight_limit")),
        )

    async def step(self, height: int) -> str:
        """Do what the weights schedule asks at head ``height``: nothing, set, commit, reveal or
        skip. Returns a short description (also kept in ``last_status``)."""
        async with self._lock:
            if height < self.next_check:
                return "waiting"
            try:
                status = await self._step(height)
            except (NodeError, TimeoutError) as error:
                log.warning("weights step at block %d failed: %s", height, error)
                self.next_check = height + 1
                status = f"failed: {error}"
            except Exception as error:  # a bug: say so loudly, and try again next block
                log.exception("weights step at block %d failed unexpectedly", height)
                self.next_check = height + 1
                status = f"failed: {error!r}"
            self.last_status = status
            return status

    async def _step(self, height: int) -> str:
        subnet = await self.ledger.subnet(self.netuid)
        graph = await self.ledger.metagraph(self.netuid)
        me = next((n for n in graph.neurons if n.hotkey == self.hotkey.address), None)
        if me is None:
            self.next_check = height + int(_hp(subnet, "tempo"))
            return self._skip(f"hotkey is not registered on subnet {self.netuid}")
        if _hp(subnet, "commit_reveal_enabled"):
            return await self._commit_reveal_step(height, subnet, graph, me)
        interval = max(int(_hp(subnet, "tempo")), int(_hp(subnet, "weights_rate_limit")), 1)
        due = me.last_update + interval
        if height + 1 < due:  # a transaction sent now lands in block height + 1 at the earliest
            self.next_check = due - 1
            return "waiting"
        reason = self._eligibility(me, subnet)
        if reason is not None:
            self.next_check = subnet.next_epoch_block
            return self._skip(reason)
        try:
            uids, weights = self.current_weights(graph, subnet, me.uid)
        except NoWeights as error:
            self.next_check = height + 1
            return self._skip(str(error))
        info = await transact(
            self.ledger,
            self.chain_id,
            self.hotkey,
            "set_weights",
            {"netuid": self.netuid, "uids": uids, "weights": weights},
        )
        if info is None or info.status != "included":
            self.next_check = height + 2
            return "failed: set_weights not included (see log)"
        self._last_skip = None
        self.next_check = (info.height or height) + interval - 1
        self._remember_weights(info.height, uids, weights, "set")
        return "set"

    def _remember_weights(
        self, block: int | None, uids: list[int], weights: list[int], how: str
    ) -> None:
        log.info(
            "%s weights in block %s: %s",
            how,
            block,
            ", ".join(f"uid {u}: {w}" for u, w in zip(uids, weights, strict=True)),
        )
        self.book.set_meta(
            self.netuid,
            "last_weights",
            json.dumps({"block": block, "uids": uids, "weights": weights, "how": how}),
        )

    async def _commit_reveal_step(
        self, height: int, subnet: Subnet, graph: Metagraph, me: NeuronInfo
    ) -> str:
        delay = int(_hp(subnet, "commit_reveal_period")) * int(_hp(subnet, "tempo"))
        pending = self.book.pending_commit(self.netuid)
        if pending is not None and pending.hotkey != self.hotkey.address:
            self.book.clear_commit(self.netuid)
            pending = None
        if pending is not None and pending.block is None:
            pending = await self._settle_commit(pending)
        status = ""
        if pending is not None and pending.block is not None:
            start, end = pending.block + delay, pending.block + 2 * delay
            if height + 1 < start:
                self.next_check = start - 1
                return "waiting to reveal"
            if height + 1 >= end:
                log.warning(
                    "the commit of block %d expired unrevealed (window ended at %d)",
                    pending.block,
                    end,
                )
                self.book.clear_commit(self.netuid)
            else:
                info = await transact(
                    self.ledger,
                    self.chain_id,
                    self.hotkey,
                    "reveal_weights",
                    {
                        "netuid": self.netuid,
                        "uids": pending.uids,
                        "weights": pending.weights,
                        "salt": pending.salt,
                    },
                )
                if info is None:
                    self.next_check = height + 2
                    return "failed: reveal refused (see log)"
                self.book.clear_commit(self.netuid)
                if info.status == "included":
                    self._remember_weights(info.height, pending.uids, pending.weights, "revealed")
                    status = "revealed"
                    height = info.height or height
        reason = self._eligibility(me, subnet)
        if reason is not None:
            self.next_check = subnet.next_epoch_block
            return status or self._skip(reason)
        try:
            uids, weights = self.current_weights(graph, subnet, me.uid)
        except NoWeights as error:
            self.next_check = height + 1
            return status or self._skip(str(error))
        salt = secrets.token_hex(16)
        commit = PendingCommit(
            netuid=self.netuid,
            hotkey=self.hotkey.address,
            uids=uids,
            weights=weights,
            salt=salt,
            commit_hash=weights_commit_hash(self.netuid, self.hotkey.address, uids, weights, salt),
            block=None,
            tx_hash=None,
            created_ms=time.time_ns() // 1_000_000,
        )

        def saved(tx_hash: str) -> None:  # the salt is on disk before the commit leaves
            self.book.save_commit(replace(commit, tx_hash=tx_hash))

        info = await transact(
            self.ledger,
            self.chain_id,
            self.hotkey,
            "commit_weights",
            {"netuid": self.netuid, "commit_hash": commit.commit_hash},
            tx_hook=saved,
        )
        if info is None or info.status != "included":
            self.book.clear_commit(self.netuid)
            self.next_check = height + 2
            return (status + ", " if status else "") + "failed: commit not included (see log)"
        self.book.save_commit(replace(commit, tx_hash=info.hash, block=info.height))
        self._last_skip = None
        self.next_check = (info.height or height) + delay - 1
        log.info(
            "committed weights for %d uids in block %s; reveal from block %s",
            len(uids),
            info.height,
            (info.height or height) + delay,
        )
        return (status + ", " if status else "") + "committed"

    async def _settle_commit(self, pending: PendingCommit) -> PendingCommit | None:
        """A commit saved before a crash, whose block is unknown: look it up by its hash."""
        if pending.tx_hash is not None:
            try:
                info = await self.ledger.tx_status(pending.tx_hash)
            except NodeError as error:
                if error.code != "unknown_transaction":
                    raise
            else:
                if info.status == "included":
                    settled = replace(pending, block=info.height)
                    self.book.save_commit(settled)
                    return settled
                if info.status == "pending":
                    return pending
        log.info("forgetting a commit that never reached a block")
        self.book.clear_commit(self.netuid)
        return None
