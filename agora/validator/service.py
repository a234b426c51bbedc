"""The validator: probe every miner of a subnet, keep scores, set weights every tempo.

    validator = await Validator.create(ValidatorConfig(netuid=1, hotkey=hot, coldkey=cold))
    await validator.run()          # until validator.stop() (or a signal, from the CLI)

These loops share one process:

* **Probing**, every ``probe_interval`` seconds: read the metagraph, forget the scores of uids
  whose hotkey changed, run one round against every uid with an endpoint (not itself) and fold
  the outcomes into the persisted moving scores (:mod:`agora.validator.tasks`,
  :mod:`agora.validator.scoring`, :mod:`agora.validator.store`).
* **Audits**, with ``gateways``: organic answers archived by the gateways are drawn, re-checked
  and disputed, and other validators' disputes voted on (:mod:`agora.validator.audit`).
* **Weights**, driven by the ledger's block events (``/v1/events``; polling ``/v1/status`` while
  the stream is down): every tempo, weights from the scores, set directly or by commit and reveal,
  or a logged skip without a validator permit (:mod:`agora.validator.setter`,
  :mod:`agora.validator.weights`).

At start, ``create`` registers the hotkey by burn if it is not registered and, with ``stake``,
stakes from the coldkey up to that amount. The coldkey is only decrypted (``coldkey`` may be a
callable) when one of those is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agora.chain.client import DEFAULT_URL, LedgerClient
from agora.chain.errors import NodeError
from agora.chain.models import Metagraph
from agora.crypto.keys import Keypair
from agora.models import Engine, load_engine
from agora.validator import ledger as chain
from agora.validator.audit import AuditBook, Auditor
from agora.validator.errors import SetupFailed, UnknownSubnetError
from agora.validator.prober import MinerClient, MinerTarget
from agora.validator.probes import round_seed
from agora.validator.scoring import (
    DEFAULT_ALPHA,
    DEFAULT_LATENCY_WEIGHT,
    ProbeOutcome,
    round_samples,
)
from agora.validator.setter import WeightSetter
from agora.validator.store import ScoreBook
from agora.validator.tasks import ProbeTask, run_round, task_for

__all__ = ["Validator", "ValidatorConfig", "default_data_dir"]

log = logging.getLogger("agora.validator")


def default_data_dir() -> Path:
    """``$AGORA_HOME/validator``, else ``~/.agora/validator``."""
    home = os.environ.get("AGORA_HOME")
    return (Path(home) if home else Path.home() / ".agora") / "validator"


@dataclass
class ValidatorConfig:
    """Everything a validator needs. Amounts are in units (10^9 per token)."""

    netuid: int
    hotkey: Keypair
    #: pays the registration burn and the stake; a callable is called only if needed
    coldkey: Keypair | Callable[[], Keypair] | None = None
    model: str = "embed:minilm"
    node: str = DEFAULT_URL
    data_dir: Path = field(default_factory=default_data_dir)
    probe_interval: float = 12.0
    #: seconds a miner has for one request; default 10 for embeddings, 30 for generation
    probe_timeout: float | None = None
    concurrency: int = 64
    alpha: float = DEFAULT_ALPHA
    latency_weight: float = DEFAULT_LATENCY_WEIGHT
    #: stake the hotkey up to this many units at start (None: leave the stake alone)
    stake: int | None = None
    #: register by burn at start if needed (False: fail instead)
    register: bool = True
    set_weights: bool = True
    task_options: dict[str, Any] = field(default_factory=dict)
    #: gateways whose organic answers are audited (agora.validator.audit); empty: no audits
    gateways: list[str] = field(default_factory=list)
    #: TESTS AND DEMOS ONLY: miner hotkeys this validator never disputes and always acquits
    collude_with: list[str] = field(default_factory=list)
    audit_interval: float = 2.0


class Validator:
    """One validator on one subnet. Build it with ``await Validator.create(config)``."""

    def __init__(
        self,
        config: ValidatorConfig,
        ledger: LedgerClient,
        engine: Engine,
        client: MinerClient,
        book: ScoreBook,
        task: ProbeTask,
        chain_id: str,
        *,
        owns_engine: bool,
        owns_ledger: bool = False,
    ) -> None:
        self.config = config
        self.netuid = config.netuid
        self.hotkey = config.hotkey
        self.ledger = ledger
        self.engine = engine
        self.client = client
        self.book = book
        self.task = task
        self.chain_id = chain_id
        self._owns_engine = owns_engine
        self._owns_ledger = owns_ledger
        self._stop = asyncio.Event()
        self._weights_task: asyncio.Task[str] | None = None
        self.head_height = 0
        self.head_hash = ""
        self.last_outcomes: list[ProbeOutcome] = []
        #: called with each round's outcomes (the public HTTP API keeps a window of them)
        self.round_listeners: list[Callable[[list[ProbeOutcome]], None]] = []
        self.weights = WeightSetter(ledger, chain_id, config.hotkey, config.netuid, book)
        self.auditor: Auditor | None = None
        if config.gateways:
            self.auditor = Auditor(
                config.hotkey,
                config.netuid,
                ledger,
                engine,
                config.gateways,
                AuditBook.in_dir(config.data_dir),
                collude_with=config.collude_with,
                interval=config.audit_interval,
            )

    # -- building ----------------------------------------------------------------------------------

    @classmethod
    async def create(
        cls,
        config: ValidatorConfig,
        *,
        ledger: LedgerClient | None = None,
        engine: Engine | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> Validator:
        """Connect to the ledger, load the reference model, open the score book, and register and
        stake if the config asks for it.

        Raises:
            NodeUnreachable: no node at ``config.node``.
            UnknownSubnetError: the subnet does not exist.
            SetupFailed: registering or staking was needed and failed.
            ModelError: the reference model cannot be loaded.
        """
        owns_ledger = ledger is None
        ledger = ledger or LedgerClient(config.node)
        owns_engine = engine is None
        try:
            status = await ledger.status()
            try:
                await ledger.subnet(config.netuid)
            except NodeError as error:
                if error.code in ("unknown_subnet", "not_found"):
                    raise UnknownSubnetError(
                        f"subnet {config.netuid} does not exist on the ledger at {ledger.url}; "
                        "list subnets with `agora subnet list`"
                    ) from None
                raise
            if engine is None:
                engine = await load_engine(config.model, config.data_dir)
        except BaseException:
            if owns_ledger:
                await ledger.aclose()
            raise
        timeout = config.probe_timeout or (10.0 if engine.task == "embed" else 30.0)
        client = MinerClient(config.hotkey, config.netuid, http, timeout=timeout)
        book = ScoreBook.in_dir(config.data_dir)
        validator = cls(
            config,
            ledger,
            engine,
            client,
            book,
            task_for(engine, **config.task_options),
            status.chain_id,
            owns_engine=owns_engine,
            owns_ledger=owns_ledger,
        )
        try:
            if config.register:
                await validator.ensure_registered()
            elif await chain.find_neuron(ledger, config.netuid, config.hotkey.address) is None:
                raise SetupFailed(
                    f"hotkey {config.hotkey.address[:16]}… is not registered on subnet "
                    f"{config.netuid}, and registering was not allowed (--no-register)"
                )
            if config.stake is not None:
                await validator.ensure_stake(config.stake)
        except BaseException:
            await validator.close()
            raise
        log.info(
            "validator %s… on subnet %d with reference %s (data in %s)",
            config.hotkey.address[:16],
            config.netuid,
            engine.model_id,
            config.data_dir,
        )
        return validator

    async def close(self) -> None:
        """Stop the loops and release the engine, the HTTP client and the database."""
        self.stop()
        if self._weights_task is not None:
            self._weights_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._weights_task
        await self.client.aclose()
        if self.auditor is not None:
            await self.auditor.aclose()
            self.auditor.book.close()
        if self._owns_engine:
            await self.engine.close()
        if self._owns_ledger:
            await self.ledger.aclose()
        self.book.close()

    # -- ledger ------------------------------------------------------------------------------------

    def _coldkey(self) -> Keypair:
        """The coldkey, decrypted now if it was given as a loader (raises SetupFailed if none)."""
        coldkey = self.config.coldkey
        if coldkey is None:
            raise SetupFailed(
                "this needs the coldkey (to pay the burn or the stake), and none was given: "
                "start with --wallet NAME (or --dev-key NAME on the dev network)"
            )
        if not isinstance(coldkey, Keypair):
            coldkey = coldkey()
            self.config.coldkey = coldkey
        return coldkey

    async def ensure_registered(self) -> int:
        """The validator's uid, registering the hotkey by burn if needed (raises SetupFailed)."""
        return await chain.ensure_registered(
            self.ledger, self.chain_id, self.netuid, self.hotkey, self._coldkey
        )

    async def ensure_stake(self, amount: int) -> int:
        """Stake up to ``amount`` units behind the hotkey (raises SetupFailed)."""
        return await chain.ensure_stake(
            self.ledger, self.chain_id, self.hotkey, amount, self._coldkey
        )

    # -- probing -------------------------------------------------------------------------------

    def targets(self, graph: Metagraph) -> list[MinerTarget]:
        """Every uid with an endpoint except this validator."""
        return [
            MinerTarget.from_endpoint(
                n.uid, n.hotkey, n.endpoint.ip, n.endpoint.port, n.endpoint.protocol
            )
            for n in graph.neurons
            if n.endpoint is not None and n.hotkey != self.hotkey.address
        ]

    async def run_round(self) -> list[ProbeOutcome]:
        """Probe every miner once, now, and record the outcomes. Returns them (uid order)."""
        status = await self.ledger.status()
        graph = await self.ledger.metagraph(self.netuid)
        reset = self.book.sync_hotkeys(self.netuid, {n.uid: n.hotkey for n in graph.neurons})
        if reset:
            log.info("uids %s changed hotkey (or left): their scores start from zero", reset)
        targets = self.targets(graph)
        await self.client.forget({target.url for target in targets})
        if not targets:
            log.info("no miner on subnet %d serves an endpoint yet", self.netuid)
            return []
        round_no = self.book.next_round(self.netuid)
        seed = round_seed(status.head_hash, self.hotkey.address, self.netuid, round_no)
        plan = await self.task.prepare(seed, round_no)
        outcomes = await run_round(self.task, self.client, targets, plan, self.config.concurrency)
        samples = round_samples(outcomes, self.config.latency_weight)
        scores = self.book.record(self.netuid, round_no, outcomes, samples, self.config.alpha)
        self.last_outcomes = outcomes
        for listener in self.round_listeners:
            listener(outcomes)
        self._log_round(round_no, status.height, outcomes, scores)
        return outcomes

    def _log_round(
        self, round_no: int, height: int, outcomes: list[ProbeOutcome], scores: dict[int, float]
    ) -> None:
        counts: dict[str, int] = {}
        for outcome in outcomes:
            counts[outcome.verdict] = counts.get(outcome.verdict, 0) + 1
        summary = ", ".join(f"{n} {verdict}" for verdict, n in sorted(counts.items()))
        log.info("round %d at block %d: %d miners: %s", round_no, height, len(outcomes), summary)
        for outcome in outcomes:
            latency = f"{outcome.latency * 1000:.0f} ms" if outcome.latency is not None else "-"
            line = "uid %d %s score %.3f latency %s%s"
            detail = "" if outcome.ok else f": {outcome.reason}"
            level = logging.INFO if not outcome.ok else logging.DEBUG
            log.log(
                level,
                line,
                outcome.uid,
                outcome.verdict,
                scores.get(outcome.uid, 0.0),
                latency,
                detail,
            )

    # -- weights ---------------------------------------------------------------------------------

    async def weights_step(self, height: int) -> str:
        """What the weights schedule does at head ``height`` (see :mod:`agora.validator.setter`):
        "waiting", "set", "committed", "revealed, committed", "skipped: <why>" or "failed: ..."."""
        return await self.weights.step(height)

    # -- running -------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Probe and set weights until :meth:`stop`."""
        loops = [asyncio.create_task(self._probe_loop(), name="probe")]
        if self.config.set_weights:
            loops.append(asyncio.create_task(self._block_loop(), name="blocks"))
        if self.auditor is not None:
            loops.append(asyncio.create_task(self.auditor.run(self._stop), name="audit"))
        stopped = asyncio.create_task(self._stop.wait())
        try:
            done, _ = await asyncio.wait([stopped, *loops], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopped and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in [stopped, *loops]:
                task.cancel()
            for task in [stopped, *loops]:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=max(0.0, seconds))

    async def _probe_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            started = loop.time()
            try:
                await self.run_round()
            except NodeError as error:
                log.warning("probe round skipped: %s", error)
            except Exception:
                log.exception("probe round failed")
            await self._sleep(self.config.probe_interval - (loop.time() - started))

    def _on_block(self, height: int, block_hash: str) -> None:
        if height <= self.head_height:
            return
        self.head_height, self.head_hash = height, block_hash
        if height < self.weights.next_check:
            return
        if self._weights_task is None or self._weights_task.done():
            self._weights_task = asyncio.create_task(self.weights_step(height))

    async def _block_loop(self) -> None:
        """Follow the head through the event stream; poll while it is down."""
        while not self._stop.is_set():
            try:
                async for event in self.ledger.events(self.head_height or None):
                    self._on_block(int(event["height"]), str(event["hash"]))
                    if self._stop.is_set():
                        return
            except NodeError as error:
                log.warning("block events unavailable (%s); polling", error.message)
            except Exception:
                log.exception("the block event stream failed; polling")
            for _ in range(5):
                if self._stop.is_set():
                    return
                try:
                    status = await self.ledger.status()
                    self._on_block(status.height, status.head_hash)
                except NodeError:
                    pass
                await self._sleep(1.0)
