"""Ledger throughput: signed transfers executed, sealed and committed to SQLite, per second.

What is timed, per block, exactly what the producer does (``agora.chain.node``):

    build_block = prepare_proposal (clone the state, for each transaction: verify its Ed25519
                  signature, check the nonce, apply it; end-of-block rules; state root)
                  + seal (transaction root, header, producer signature)
    store.append  (one SQLite transaction, WAL, synchronous=FULL: fsync before it returns;
                  a full state snapshot every 100 blocks)

and, as a second figure, what a follower does with the same blocks: ``apply_block`` (header,
producer signature, transaction root, every transaction again, state root) + ``store.append``.
Mempool admission (one more signature check per transaction) is measured on its own.
Transactions are signed before the clock starts: signing is the wallet's cost, not the ledger's.

One process, one thread (``--pin`` also pins it to one core). Run:

    python -m bench.bench_ledger                 # block sizes 100, 1000, 10000
    python -m bench.bench_ledger --profile       # plus a cProfile of 1000-transaction blocks
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from nacl.signing import VerifyKey

from agora.chain.genesis import GenesisSpec
from agora.chain.mempool import Mempool, MempoolLimits
from agora.chain.node import build_block
from agora.chain.store import Store
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.protocol.accounts import transfer
from agora.protocol.block import apply_block
from agora.protocol.codec import is_hex, verify_signature
from agora.protocol.state import State, state_root
from agora.protocol.transactions import Transaction, check_signature, tx_signing_bytes
from agora.protocol.units import TOKEN

SUBTENSOR_BLOCK_SECONDS = 12.0
TARGET_TPS = 10_000
CHAIN_ID = "agora-bench"
PRODUCER = Keypair.from_name("bench/producer")


@dataclass
class Result:
    block_size: int
    blocks: int
    transfers: int
    produce_seconds: float  # build_block + store.append, all blocks
    execute_seconds: float  # build_block only
    store_seconds: float  # store.append only
    follow_seconds: float  # apply_block + store.append, all blocks
    admit_seconds: float  # Mempool.add, all transfers

    @property
    def produce_tps(self) -> float:
        return self.transfers / self.produce_seconds

    @property
    def follow_tps(self) -> float:
        return self.transfers / self.follow_seconds

    @property
    def admit_tps(self) -> float:
        return self.transfers / self.admit_seconds

    @property
    def seconds_per_block(self) -> float:
        return self.produce_seconds / self.blocks


def pin_to_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"pinned to core {core}"
    return "not pinned (no sched_setaffinity)"


def senders(count: int) -> list[Keypair]:
    return [Keypair.from_name(f"bench/sender/{i}") for i in range(count)]


def genesis(keys: list[Keypair], idle: int = 0) -> State:
    """The senders funded, plus ``idle`` other funded accounts that only make the state big."""
    balances = {f"{i:064x}": TOKEN for i in range(idle)}
    balances.update({key.address: 1_000_000 * TOKEN for key in keys})
    return GenesisSpec(CHAIN_ID, PRODUCER.address, balances, "mainnet").to_state()


def signed_transfers(keys: list[Keypair], count: int) -> list[Transaction]:
    """Round-robin over senders, each paying the next one: every prefix is a valid sequence."""
    txs = []
    for k in range(count):
        sender, recipient = keys[k % len(keys)], keys[(k + 1) % len(keys)]
        body = {"to": recipient.address, "amount": 1 + k % 1000}
        txs.append(sign_transaction(sender, CHAIN_ID, "transfer", k // len(keys), body))
    return txs


def run_size(
    block_size: int, blocks: int, start: State, txs: list[Transaction], workdir: Path
) -> Result:
    batches = [txs[i * block_size : (i + 1) * block_size] for i in range(blocks)]
    assert all(len(batch) == block_size for batch in batches), "not enough signed transfers"

    workdir.mkdir(parents=True, exist_ok=True)
    producer_store = Store.open(workdir / f"produce-{block_size}.sqlite")
    producer_store.initialize(start)
    state, produced = start, []
    execute = store = 0.0
    # Signature checks are memoised (a node checks at admission and again in the block); every
    # phase below starts cold, so each of its figures pays one full Ed25519 verify per transfer.
    verify_signature.cache_clear()
    for index, batch in enumerate(batches):
        t0 = time.perf_counter()
        block, state, rejected = build_block(PRODUCER, state, batch, 1_000 * (index + 1))
        t1 = time.perf_counter()
        producer_store.append(block, state)
        t2 = time.perf_counter()
        assert not rejected, rejected[0].error
        execute += t1 - t0
        store += t2 - t1
        produced.append(block)
    producer_store.close()

    follower_store = Store.open(workdir / f"follow-{block_size}.sqlite")
    follower_store.initialize(start)
    followed = start
    verify_signature.cache_clear()
    t0 = time.perf_counter()
    for block in produced:
        followed = apply_block(followed, block)
        follower_store.append(block, followed)
    follow = time.perf_counter() - t0
    follower_store.close()
    assert followed.last_block_hash == produced[-1].hash

    limits = MempoolLimits(max_size=len(txs), max_per_sender=len(txs), rate=1e12, burst=len(txs))
    pool = Mempool(start, limits)
    admitted = [tx for batch in batches for tx in batch]
    verify_signature.cache_clear()
    t0 = time.perf_counter()
    for tx in admitted:
        pool.add(tx)
    admit = time.perf_counter() - t0

    return Result(
        block_size=block_size,
        blocks=blocks,
        transfers=block_size * blocks,
        produce_seconds=execute + store,
        execute_seconds=execute,
        store_seconds=store,
        follow_seconds=follow,
        admit_seconds=admit,
    )


def table(results: list[Result]) -> str:
    head = (
        f"{'block size':>10} {'blocks':>6} {'produce tx/s':>12} {'exec ms/blk':>11} "
        f"{'store ms/blk':>12} {'follow tx/s':>11} {'admit tx/s':>10} "
        f"{'per 12 s block':>14} {'headroom':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        capacity = r.produce_tps * SUBTENSOR_BLOCK_SECONDS
        headroom = SUBTENSOR_BLOCK_SECONDS / r.seconds_per_block
        lines.append(
            f"{r.block_size:>10,} {r.blocks:>6} {r.produce_tps:>12,.0f} "
            f"{1000 * r.execute_seconds / r.blocks:>11.1f} "
            f"{1000 * r.store_seconds / r.blocks:>12.1f} {r.follow_tps:>11,.0f} "
            f"{r.admit_tps:>10,.0f} {capacity:>14,.0f} {headroom:>8,.0f}x"
        )
    return "\n".join(lines)


def _per_call(fn: Callable[[], object], repeat: int) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def warm_then(
    each: Callable[[Callable[[Transaction], object]], float], sample: list[Transaction]
) -> float:
    """check_signature once verified at admission: the block's second check hits the memo."""
    for tx in sample:
        check_signature(CHAIN_ID, tx)
    return each(lambda tx: check_signature(CHAIN_ID, tx))


def transfer_costs(start: State, txs: list[Transaction]) -> list[tuple[str, float]]:
    """Microseconds per transfer for each step the ledger takes (no profiler overhead)."""
    sample = txs[:2_000]
    n = len(sample)
    it = iter(range(10**9))

    def each(step: Callable[[Transaction], object]) -> float:
        return 1e6 * _per_call(lambda: step(sample[next(it) % n]), n)

    message = {tx.hash: tx_signing_bytes(CHAIN_ID, tx) for tx in sample}
    keys = {tx.sender: VerifyKey(bytes.fromhex(tx.sender)) for tx in sample}
    scratch = start.clone()
    return [
        (
            "Ed25519 verify (libsodium alone)",
            each(lambda tx: keys[tx.sender].verify(message[tx.hash], bytes.fromhex(tx.signature))),
        ),
        (
            "is_hex on sender and signature",
            each(lambda tx: is_hex(tx.sender, 64) and is_hex(tx.signature, 128)),
        ),
        ("canonical signing bytes", each(lambda tx: tx_signing_bytes(CHAIN_ID, tx))),
        (
            "check_signature (all of the above)",
            each(lambda tx: (verify_signature.cache_clear(), check_signature(CHAIN_ID, tx))),
        ),
        ("check_signature, memoised (in a block)", warm_then(each, sample)),
        ("tx.hash (cached after the first call)", each(lambda tx: tx.hash)),
        (
            "transfer rule (balances only)",
            each(lambda tx: transfer(scratch, tx.sender, tx.body["to"], 1)),
        ),
        ("block JSON for SQLite", each(lambda tx: json.dumps(tx.to_json()))),
    ]


def state_costs(sizes: list[int], workdir: Path) -> list[tuple[int, float, float, float, float]]:
    """Per-block costs that grow with the state, whatever the block holds (milliseconds):
    clone, state root, snapshot encoding, and a whole empty block built and stored."""
    rows = []
    for accounts in sizes:
        state = genesis([], accounts)
        clone = 1e3 * _per_call(state.clone, 3)
        root = 1e3 * _per_call(lambda s=state: state_root(s), 3)  # type: ignore[misc]
        snapshot = 1e3 * _per_call(lambda s=state: json.dumps(s.to_json()), 3)  # type: ignore[misc]
        store = Store.open(workdir / f"empty-{accounts}.sqlite", snapshot_interval=10**9)
        store.initialize(state)
        t0 = time.perf_counter()
        current = state
        for index in range(3):
            block, current, _ = build_block(PRODUCER, current, [], 1_000 * (index + 1))
            store.append(block, current)
        empty = 1e3 * (time.perf_counter() - t0) / 3
        store.close()
        rows.append((accounts, clone, root, snapshot, empty))
    return rows


def profile(keys: list[Keypair], start: State, txs: list[Transaction], workdir: Path) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    run_size(1_000, 5, start, txs, workdir / "profile")
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(18)
    return out.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="block sizes, comma separated")
    parser.add_argument("--transfers", type=int, default=20_000, help="at least this many each")
    parser.add_argument("--senders", type=int, default=1_000)
    parser.add_argument("--idle-accounts", type=int, default=0, help="extra accounts in state")
    parser.add_argument(
        "--state-sizes", default="1000,10000,100000", help="accounts, for the per-block costs"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; the best counts")
    parser.add_argument("--pin", action="store_true", help="pin the process to one core")
    parser.add_argument("--profile", action="store_true", help="cProfile 1000-transfer blocks")
    parser.add_argument("--out", type=Path, default=Path("bench/out/bench_ledger.json"))
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]

    pinned = pin_to_one_core() if args.pin else "single-threaded, not pinned"
    plan = {size: max(3, -(-args.transfers // size)) for size in sizes}
    needed = max(size * blocks for size, blocks in plan.items())
    keys = senders(args.senders)
    start = genesis(keys, args.idle_accounts)
    print(f"signing {needed:,} transfers from {len(keys):,} senders ...", file=sys.stderr)
    txs = signed_transfers(keys, needed)

    results = []
    with tempfile.TemporaryDirectory(prefix="agora-bench-", dir=os.environ.get("TMPDIR")) as tmp:
        for size, blocks in plan.items():
            print(f"block size {size:,}: {blocks} blocks x {args.repeat} ...", file=sys.stderr)
            runs = [
                run_size(size, blocks, start, txs, Path(tmp) / f"run{i}")
                for i in range(args.repeat)
            ]
            results.append(min(runs, key=lambda r: r.produce_seconds))
        costs = transfer_costs(start, txs)
        print("per-block costs by state size ...", file=sys.stderr)
        by_state = state_costs([int(n) for n in args.state_sizes.split(",")], Path(tmp))
        report = profile(keys, start, txs, Path(tmp)) if args.profile else ""

    print(
        f"\nAgora ledger: signed transfers applied and committed (SQLite WAL, fsync per block)\n"
        f"python {platform.python_version()} on {platform.machine()}, one process ({pinned}); "
        f"{len(keys):,} funded senders, {len(start.balances):,} accounts in the state; best of "
        f"{args.repeat} runs; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores\n"
    )
    print(table(results))
    best = max(r.produce_tps for r in results)
    verdict = "meets" if best >= TARGET_TPS else "is BELOW"
    print(
        f"\n'per 12 s block': transfers one subtensor-length block could hold at this rate "
        f"(the chain caps a block at 20,000). 'headroom': 12 s / time to make one block of "
        f"that size.\nBest production rate {best:,.0f} transfers/s {verdict} the "
        f"{TARGET_TPS:,}/s target."
    )
    print("\nWhere a transfer's time goes (microseconds each, measured one step at a time):")
    for name, micros in costs:
        print(f"  {name:<38} {micros:>7.1f}")
    print(
        "\nWhat every block pays whatever it holds, by state size (milliseconds): the state is "
        "cloned\nand its root recomputed from all of it on every block (snapshot: every 100th)."
    )
    print(f"  {'accounts':>9} {'clone':>7} {'state_root':>10} {'snapshot':>9} {'empty block':>11}")
    for accounts, clone, root, snapshot, empty in by_state:
        print(f"  {accounts:>9,} {clone:>7.1f} {root:>10.1f} {snapshot:>9.1f} {empty:>11.1f}")
    if report:
        print("\ncProfile, 5 blocks of 1,000 transfers, by own time:\n" + report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "python": platform.python_version(),
                "machine": platform.machine(),
                "pinned": pinned,
                "senders": len(keys),
                "accounts": len(start.balances),
                "transfer_costs_us": dict(costs),
                "per_block_ms_by_accounts": [
                    dict(
                        zip(
                            ("accounts", "clone", "state_root", "snapshot", "empty_block"),
                            row,
                            strict=True,
                        )
                    )
                    for row in by_state
                ],
                "results": [
                    {**asdict(r), "produce_tps": r.produce_tps, "follow_tps": r.follow_tps}
                    for r in results
                ],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
