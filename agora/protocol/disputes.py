"""Disputes: a validator accuses a miner's signed receipt, validators vote, the ledger slashes.

The ledger never runs a model. A validator that re-ran an answer and found a mismatch submits
``dispute_open`` with the miner's signed receipt and a small piece of evidence, and pays the
subnet's ``dispute_deposit``; it counts as the first guilty vote. Every other validator of the
subnet re-checks the answer on its own and submits ``dispute_vote`` (guilty or not), once, final.

Who may take part. Hotkeys holding a validator permit on the subnet, except the accused miner.
The accused's stake is not counted at all, so a miner that is also a large validator cannot veto
its own dispute.

Resolution, at the end of every block, for each open dispute in id order, counting for each
voter the stake it holds *now* and only if it still holds a permit (so stake moved after voting
cannot vote twice):

- guilty stake > 1/2 of the subnet's validator-permit stake (the accused's excluded): **upheld**.
  ``slash_ppm`` of the stake behind the miner's hotkey is taken from every coldkey pro rata
  (rounded down per coldkey); ``slash_burn_ppm`` of it is burned and the rest is paid to the
  guilty voters' hotkey balances pro rata by stake (rounding dust is burned too); the deposit goes
  back to the challenger; the miner's neuron is marked slashed, so its incentive is zero (the
  epoch masks its column of weights) until the hotkey is pruned and registers again.
- not-guilty stake > 1/2, or the ``deadline`` block ends without a majority: **rejected**. The
  deposit goes to the accused miner's coldkey (chosen over burning: the accused is the one a
  frivolous dispute harmed, and paying it makes a spam challenge cost the spammer the same).

Timing. A receipt can be disputed from the block after its deciding block (the first block
after its timestamp, which seeds its audit draw) for ``dispute_window`` blocks; one post-dated
by more than :data:`MAX_FUTURE_MS` past the last block can be disputed at once.

While a dispute is open the accused hotkey's stake cannot be removed (``stake.remove_stake``
refuses), so a miner cannot run from a verdict it sees coming; stake removed before the dispute
is still unbonding (``stake.unbonding_delay`` covers the window and the vote) and a slash takes
its share of that too. Nothing here mints: a slash only
moves stake to balances or to the burned total, and a deposit only moves between balances and
the dispute, which the supply invariant counts (``DisputeState.locked``).

Raises (from the transactions): UnknownSubnet, NotRegistered, NoValidatorPermit, BadSignature
(the receipt's signature), InvalidDispute (format, netuid, window, duplicate, closed, double
vote), InsufficientBalance (the deposit).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from agora.protocol.accounts import credit, debit
from agora.protocol.audit import deciding_height
from agora.protocol.codec import EncodingError, canonical_bytes, is_hex
from agora.protocol.dispute_state import (
    OPEN,
    REJECTED,
    UPHELD,
    Dispute,
    Payout,
    Vote,
)
from agora.protocol.errors import (
    BadSignature,
    InvalidDispute,
    NotRegistered,
    NoValidatorPermit,
)
from agora.protocol.receipts import receipt_hash, receipt_problem, receipt_signature_valid
from agora.protocol.stake import slash_hotkey
from agora.protocol.state import State, Subnet
from agora.protocol.subnets import get_subnet

PPM = 1_000_000
KINDS = frozenset({"dispute_open", "dispute_vote"})
EVIDENCE_KINDS = ("toploc", "embedding", "generation", "zk", "truncation", "other")
MAX_EVIDENCE_BYTES = 1024
MAX_REASON = 256
MAX_FUTURE_MS = 60_000
"""A receipt dated more than this after the last block can be disputed at once (its deciding
block is taken to be the current one): otherwise a miner could post-date its receipts to escape
every dispute."""


# -- checks -----------------------------------------------------------------------------------


def check_evidence(evidence: dict[str, Any]) -> None:
    """Evidence is small and says what kind of check failed: ``kind`` (one of
    :data:`EVIDENCE_KINDS`), ``reason`` (1..256 characters), optionally ``reference`` (a SHA-256
    hex of the reference output), and any other fields within 1,024 canonical bytes.

    Raises InvalidDispute.
    """
    kind = evidence.get("kind")
    if kind not in EVIDENCE_KINDS:
        raise InvalidDispute(f"evidence.kind must be one of {', '.join(EVIDENCE_KINDS)}")
    reason = evidence.get("reason")
    if not isinstance(reason, str) or not 0 < len(reason) <= MAX_REASON:
        raise InvalidDispute(f"evidence.reason must be a string of 1 to {MAX_REASON} characters")
    if "reference" in evidence and not is_hex(evidence["reference"], 64):
        raise InvalidDispute("evidence.reference must be a SHA-256 hash (64 lowercase hex)")
    try:
        size = len(canonical_bytes(evidence))
    except EncodingError as error:
        raise InvalidDispute(f"evidence cannot be encoded: {error}") from None
    if size > MAX_EVIDENCE_BYTES:
        raise InvalidDispute(
            f"evidence is {size} bytes; the limit is {MAX_EVIDENCE_BYTES}: keep the details off "
            "the ledger and put their hash in evidence.reference"
        )


def permit_holder(subnet: Subnet, hotkey: str, accused: str, what: str) -> None:
    """Raises NoValidatorPermit unless ``hotkey`` holds a permit on ``subnet`` and is not the
    accused miner."""
    if hotkey == accused:
        raise NoValidatorPermit(f"the accused miner cannot {what} its own dispute")
    uid = subnet.uid_of(hotkey)
    if uid is None or not subnet.neurons[uid].validator_permit:
        raise NoValidatorPermit(
            f"hotkey {hotkey[:12]}… holds no validator permit on subnet {subnet.netuid}: only "
            "the top validators by stake (after an epoch) may dispute and vote"
        )


def receipt_block(state: State, timestamp: int) -> int | None:
    """The height of the receipt's deciding block among the blocks the state remembers; None
    when no block is after ``timestamp`` yet. A result of ``-1`` means older than every
    remembered block (outside any window)."""
    times = state.disputes.block_times
    first = state.height - len(times) + 1
    height = deciding_height(times, first, timestamp)
    if height is None:
        return None
    if height == first and first > 1:
        return -1  # an older block may be the deciding one: too old either way
    return height


def record_block_time(state: State) -> None:
    """Remember the timestamp of the block just executed (call after height and timestamp are
    set): the window of the last ``BLOCK_TIMES_KEPT`` blocks slides by one."""
    state.disputes.push_block_time(state.timestamp)


# -- transactions -----------------------------------------------------------------------------


def open_dispute(
    state: State,
    sender: str,
    netuid: int,
    receipt: dict[str, Any],
    evidence: dict[str, Any],
    block: int,
) -> int:
    """Accuse ``receipt`` on ``netuid``; ``sender`` (a permit-holding validator hotkey) pays the
    deposit from its balance and casts the first guilty vote. Returns the dispute id.

    Raises UnknownSubnet, InvalidDispute, BadSignature, NotRegistered, NoValidatorPermit or
    InsufficientBalance; changes nothing then.
    """
    subnet = get_subnet(state, netuid)
    hp = subnet.hyperparams
    problem = receipt_problem(receipt)
    if problem is not None:
        raise InvalidDispute(f"malformed receipt: {problem}")
    if not receipt_signature_valid(receipt):
        raise BadSignature(
            "the receipt's signature does not verify for its miner: submit the receipt exactly "
            "as the miner signed it (Receipt.to_json())"
        )
    check_evidence(evidence)
    if receipt["netuid"] != netuid:
        raise InvalidDispute(
            f"the receipt was issued on subnet {receipt['netuid']}, not {netuid}: dispute it there"
        )
    miner = receipt["miner"]
    uid = subnet.uid_of(miner)
    if uid is None:
        raise NotRegistered(
            f"the receipt's miner {miner[:12]}… is not registered on subnet {netuid}"
        )
    permit_holder(subnet, sender, miner, "open")
    digest = receipt_hash(receipt)
    if digest in state.disputes.by_receipt:
        raise InvalidDispute(
            f"receipt {digest[:12]}… is already disputed "
            f"(dispute {state.disputes.by_receipt[digest]}): vote on that one"
        )
    decided = receipt_block(state, receipt["timestamp"])
    if decided is None and receipt["timestamp"] > state.timestamp + MAX_FUTURE_MS:
        decided = block  # post-dated: disputable now
    if decided is None:
        raise InvalidDispute(
            "no block is after the receipt's timestamp yet, so its audit draw is not decided: "
            "wait for the next block"
        )
    if decided < 0 or block - decided > hp.dispute_window:
        raise InvalidDispute(
            f"too late: receipts on subnet {netuid} can be disputed for {hp.dispute_window} "
            f"blocks after their deciding block"
            + ("" if decided < 0 else f" (this one's was block {decided}, now {block})")
        )
    debit(state, sender, hp.dispute_deposit, f"the dispute deposit of subnet {netuid}")
    dispute_id = state.disputes.next_id
    state.disputes.next_id += 1
    neuron = subnet.neurons[uid]
    state.disputes.put(
        Dispute(
            id=dispute_id,
            netuid=netuid,
            miner=miner,
            miner_coldkey=neuron.coldkey,
            miner_uid=uid,
            miner_registered_at=neuron.registered_at,
            receipt_hash=digest,
            receipt=dict(receipt),
            evidence=dict(evidence),
            challenger=sender,
            deposit=hp.dispute_deposit,
            receipt_block=decided,
            opened_at=block,
            deadline=block + hp.dispute_period,
            votes=(Vote(sender, True, state.hotkey_stake(sender), block),),
        )
    )
    return dispute_id


def vote_dispute(state: State, sender: str, dispute_id: int, guilty: bool, block: int) -> None:
    """Cast ``sender``'s one, final vote on an open dispute.

    Raises InvalidDispute (unknown, closed, past its deadline, already voted) or
    NoValidatorPermit.
    """
    dispute = state.disputes.disputes.get(dispute_id)
    if dispute is None:
        raise InvalidDispute(f"no dispute {dispute_id}")
    if dispute.status != OPEN:
        raise InvalidDispute(f"dispute {dispute_id} is already {dispute.status}")
    if block > dispute.deadline:
        raise InvalidDispute(f"dispute {dispute_id} took votes until block {dispute.deadline}")
    subnet = get_subnet(state, dispute.netuid)
    permit_holder(subnet, sender, dispute.miner, "vote on")
    if dispute.vote_of(sender) is not None:
        raise InvalidDispute(
            f"{sender[:12]}… already voted on dispute {dispute_id}; votes are final"
        )
    vote = Vote(sender, guilty, state.hotkey_stake(sender), block)
    state.disputes.put(replace(dispute, votes=(*dispute.votes, vote)))


# -- resolution -------------------------------------------------------------------------------


def tally(state: State, dispute: Dispute) -> tuple[int, int, int]:
    """``(guilty, not_guilty, total)`` stake now: votes count only from current permit holders,
    and ``total`` is the stake of every permit holder but the accused."""
    subnet = state.subnets.get(dispute.netuid)
    if subnet is None:
        return 0, 0, 0
    holders = {
        n.hotkey: state.hotkey_stake(n.hotkey)
        for n in subnet.neurons
        if n.validator_permit and n.hotkey != dispute.miner
    }
    guilty = sum(holders.get(v.hotkey, 0) for v in dispute.votes if v.guilty)
    innocent = sum(holders.get(v.hotkey, 0) for v in dispute.votes if not v.guilty)
    return guilty, innocent, sum(holders.values())


def slash_stake(state: State, hotkey: str, slash_ppm: int) -> int:
    """Take ``slash_ppm`` of every coldkey's stake behind ``hotkey``, bonded and unbonding
    (``stake.slash_hotkey`` says how). Returns the units taken."""
    return slash_hotkey(state, hotkey, slash_ppm)


def _uphold(state: State, dispute: Dispute, block: int) -> Dispute:
    subnet = state.subnets[dispute.netuid]
    hp = subnet.hyperparams
    slashed = slash_stake(state, dispute.miner, hp.slash_ppm)
    to_burn = slashed * hp.slash_burn_ppm // PPM
    pool = slashed - to_burn
    voters = sorted(
        (v.hotkey, state.hotkey_stake(v.hotkey))
        for v in dispute.votes
        if v.guilty and _holds_permit(subnet, v.hotkey)
    )
    weight = sum(stake for _, stake in voters)
    payouts = []
    paid = 0
    for hotkey, stake in voters:
        amount = pool * stake // weight if weight else 0
        if amount:
            credit(state, hotkey, amount)
            payouts.append(Payout(hotkey, amount))
            paid += amount
    burned = slashed - paid
    state.total_burned += burned
    credit(state, dispute.challenger, dispute.deposit)
    uid = dispute.miner_uid
    if uid < len(subnet.neurons):
        neuron = subnet.neurons[uid]
        if neuron.hotkey == dispute.miner and neuron.registered_at == dispute.miner_registered_at:
            neuron.slashed = True
            neuron.incentive = 0
    return replace(
        dispute,
        status=UPHELD,
        resolved_at=block,
        reason="a stake majority of validators found the receipt's answer wrong",
        slashed=slashed,
        burned=burned,
        payouts=tuple(payouts),
        deposit_to=dispute.challenger,
    )


def _reject(state: State, dispute: Dispute, block: int, reason: str) -> Dispute:
    credit(state, dispute.miner_coldkey, dispute.deposit)
    return replace(
        dispute, status=REJECTED, resolved_at=block, reason=reason, deposit_to=dispute.miner_coldkey
    )


def _holds_permit(subnet: Subnet, hotkey: str) -> bool:
    uid = subnet.uid_of(hotkey)
    return uid is not None and subnet.neurons[uid].validator_permit


def settle_disputes(state: State, block: int) -> list[int]:
    """End-of-block rule: resolve every open dispute that has a majority or reached its
    deadline. Returns the ids resolved in this block."""
    resolved = []
    for dispute_id in sorted(state.disputes.open_ids):
        dispute = state.disputes.disputes[dispute_id]
        guilty, innocent, total = tally(state, dispute)
        if dispute.netuid not in state.subnets:
            outcome = _reject(state, dispute, block, "the subnet no longer exists")
        elif 2 * guilty > total:
            outcome = _uphold(state, dispute, block)
        elif 2 * innocent > total:
            outcome = _reject(
                state, dispute, block, "a stake majority of validators found the answer right"
            )
        elif block >= dispute.deadline:
            outcome = _reject(
                state, dispute, block, "the deadline passed without a stake majority either way"
            )
        else:
            continue
        state.disputes.put(outcome)
        resolved.append(dispute_id)
    return resolved


def apply_dispute_tx(
    state: State, kind: str, sender: str, body: dict[str, Any], block: int
) -> None:
    """Dispatch one of :data:`KINDS` (``block.apply_transaction`` calls this)."""
    if kind == "dispute_open":
        open_dispute(state, sender, body["netuid"], body["receipt"], body["evidence"], block)
    else:
        vote_dispute(state, sender, body["dispute_id"], body["guilty"], block)
