"""The provider agent: bids on orders it can serve, runs leased workloads, stays provably alive.

    agent = await ProviderAgent.create(config, keypair)
    await agent.serve()           # until SIGTERM / SIGINT, or agent.request_stop()

``create`` reads the chain (block time, chain id), binds the HTTP port, and registers (or updates)
the provider on the ledger with its stake, hardware and URL. Then, once per block, ``step``:

1. **leases**: a lease newly open on the ledger gets a working directory; a lease that ended
   (escrow ran out, tenant closed, provider slashed) has its processes stopped at once;
2. **heartbeat**: with open leases, a ``market_heartbeat`` every ``liveness_window // 3`` blocks,
   and right after a lease opens;
3. **challenges**: compute the seeded product, commit its root, open the picked cells
   (:mod:`agora.market.prover`), each as soon as the seed it needs is a known block hash;
4. **bids**: every open order this machine can serve gets a bid priced by the operator's policy
   (``floor``: its own price for exactly what was asked; ``max``: the order's max price, when that
   is at least its own), offering exactly the hardware it will give. Orders whose max price is
   below its price are skipped, and logged, so "listed but no bids" has a visible reason.

The HTTP side (the tenant's signed requests only, checked by :mod:`agora.net.guard`):

    POST /v1/leases/{id}/run        {"argv": [...], "files": {name: base64}, "env": {...}}
    GET  /v1/leases/{id}            running, exit code
    GET  /v1/leases/{id}/logs       ?offset=N: output from byte N
    GET  /v1/leases/{id}/files/{path}
    POST /v1/leases/{id}/ray        {"role": "head"} or {"role": "worker", "address": ...} (--ray)
    GET  /health                    public
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from agora.chain.client import LedgerClient
from agora.chain.errors import NodeError
from agora.chain.models import MarketChallenge, MarketLease, MarketOrder, MarketProvider
from agora.chain.runner import bind, server_for
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.market.offers import Offer
from agora.market.prover import Commitment, solve
from agora.market.workloads import WorkloadError, Workloads
from agora.net.guard import AgoraGuardMiddleware, GuardConfig, RequestGuard, verified_request
from agora.net.signing import SignedRequest
from agora.net.standing import CallerStanding
from agora.protocol.market_state import MARKET, Hardware

__all__ = ["ProviderAgent", "ProviderConfig", "create_provider_app"]

log = logging.getLogger(__name__)

Policy = Literal["floor", "max"]
Signed = Annotated[SignedRequest, Depends(verified_request)]


@dataclass
class ProviderConfig:
    node_url: str
    offer: Offer
    work_dir: Path
    host: str = "127.0.0.1"
    port: int = 8700
    public_url: str | None = None  # what tenants are told (default http://host:port)
    stake: int = MARKET.min_provider_stake
    policy: Policy = "floor"
    poll_s: float = 0.2
    ray: bool = False
    answer_challenges: bool = True

    @property
    def url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"


@dataclass
class _Progress:
    """What the agent already did, so that it does not repeat a transaction every poll."""

    bid_orders: set[int] = field(default_factory=set)
    skipped_orders: set[int] = field(default_factory=set)
    heartbeat_sent_at: int = -10
    answers: dict[int, Commitment] = field(default_factory=dict)
    sent: dict[tuple[int, str], int] = field(default_factory=dict)  # (challenge, phase) -> height


class ProviderAgent:
    """Build with ``await ProviderAgent.create(config, keypair)``."""

    def __init__(
        self,
        config: ProviderConfig,
        keypair: Keypair,
        ledger: LedgerClient,
        chain_id: str,
        block_time: float,
        sock: socket.socket | None,
    ) -> None:
        self.config = config
        self.keypair = keypair
        self.address = keypair.address
        self.ledger = ledger
        self.chain_id = chain_id
        self.block_time = block_time
        self.workloads = Workloads(config.work_dir)
        self.leases: dict[int, MarketLease] = {}  # every lease of ours seen, open or not
        self.me: MarketProvider | None = None
        self.height = -1
        self.progress = _Progress()
        self.ray_addresses: dict[int, str] = {}
        self._sock = sock
        self._stop = asyncio.Event()

    @classmethod
    async def create(
        cls, config: ProviderConfig, keypair: Keypair, *, bind_socket: bool = True
    ) -> ProviderAgent:
        """Reach the ledger, bind the port, register. Raises NodeError, OSError, ValueError."""
        ledger = LedgerClient(config.node_url)
        try:
            status = await ledger.status()
            config.offer.unit_price(status.block_time)  # a price below one unit fails here
            sock = bind(config.host, config.port) if bind_socket else None
            agent = cls(config, keypair, ledger, status.chain_id, status.block_time, sock)
            await agent.ensure_registered()
        except BaseException:
            await ledger.aclose()
            raise
        return agent

    # -- the ledger ------------------------------------------------------------------------

    async def send(self, kind: str, body: dict[str, Any]) -> str | None:
        """Sign and submit; returns the hash, or None (logged) if the node refused it."""
        try:
            nonce = await self.ledger.next_nonce(self.address)
            tx = sign_transaction(self.keypair, self.chain_id, kind, nonce, body)
            return await self.ledger.submit(tx)
        except NodeError as error:
            log.warning("%s refused: %s: %s", kind, error.code, error)
            return None

    def registration_body(self) -> dict[str, Any]:
        hw = self.config.offer.hardware
        return {
            **hw.to_json(),
            "price_info": f"{self.config.offer.price} per {'GPU' if hw.gpu else 'core'}",
            "url": self.config.url,
        }

    async def ensure_registered(self) -> None:
        """Register, or update attributes, URL and stake, and wait for the block."""
        wanted = self.registration_body()
        try:
            me: MarketProvider | None = await self.ledger.market_provider(self.address)
        except NodeError as error:
            if error.code != "not_found":
                raise
            me = None
        if me is not None:
            current = {**me.hardware.model_dump(), "price_info": me.price_info, "url": me.url}
            top_up = max(0, self.config.stake - me.stake)
            if current == wanted and me.active and top_up == 0:
                self.me = me
                return
        else:
            top_up = self.config.stake
        nonce = await self.ledger.next_nonce(self.address)
        body = {**wanted, "stake": top_up}
        tx = sign_transaction(self.keypair, self.chain_id, "market_register", nonce, body)
        await self.ledger.submit_and_wait(tx, timeout=max(30.0, 10 * self.block_time))
        self.me = await self.ledger.market_provider(self.address)
        log.info("registered as provider %s… at %s", self.address[:12], self.config.url)

    # -- one step per block ----------------------------------------------------------------

    async def step(self) -> bool:
        """Do what the newest block calls for. Returns False when there was no new block."""
        status = await self.ledger.status()
        if status.height == self.height:
            return False
        self.height = status.height
        if self.height % 10 == 0:
            self.progress.skipped_orders.clear()  # capacity or prices may have changed
        self.me = await self.ledger.market_provider(self.address)
        await self._sync_leases()
        await self._heartbeat()
        if self.config.answer_challenges:
            await self._answer_challenges()
        await self._bid()
        return True

    async def _sync_leases(self) -> None:
        open_leases = await self.ledger.market_leases(provider=self.address, status="open")
        open_ids = {lease.id for lease in open_leases}
        for lease in open_leases:
            self.leases[lease.id] = lease
            if lease.id not in self.workloads:
                self.workloads.prepare(lease.id, Hardware(**lease.hardware.model_dump()))
                log.info("lease %d opened for %s…", lease.id, lease.tenant[:12])
        for lease_id in self.workloads.known():
            workload = self.workloads.get(lease_id)
            if lease_id not in open_ids and not workload.stopped:
                await asyncio.to_thread(self.workloads.stop, lease_id)
                with contextlib.suppress(NodeError):
                    self.leases[lease_id] = await self.ledger.market_lease(lease_id)
                log.info("lease %d ended; its workload is stopped", lease_id)

    async def _heartbeat(self) -> None:
        me = self.me
        if me is None or me.open_leases == 0:
            return
        newest = max((x.opened_at for x in self.leases.values() if x.status == "open"), default=-1)
        every = max(1, MARKET.liveness_window // 3)
        due = self.height - me.last_heartbeat >= every or me.last_heartbeat < newest
        ready = self.height >= self.progress.heartbeat_sent_at + 2
        if due and ready and await self.send("market_heartbeat", {}):
            self.progress.heartbeat_sent_at = self.height

    async def _block_hash(self, height: int) -> str | None:
        if height > self.height:
            return None
        try:
            return str((await self.ledger.block(height))["hash"])
        except NodeError:
            return None

    async def _answer_challenges(self) -> None:
        pending = await self.ledger.market_challenges(provider=self.address, pending=True)
        for challenge in pending:
            await self._answer(challenge)

    async def _answer(self, challenge: MarketChallenge) -> None:
        progress = self.progress
        phase = challenge.status
        last = progress.sent.get((challenge.id, phase))
        if last is not None and self.height < last + 3:
            return  # sent recently; wait for it to land (or be refused) before trying again
        if phase == "posted":
            seed = challenge.seed or await self._block_hash(challenge.posted_at)
            if not seed:
                return
            answer = progress.answers.get(challenge.id)
            if answer is None:
                answer = await asyncio.to_thread(solve, seed, challenge.size)
                progress.answers[challenge.id] = answer
            body = {"challenge": challenge.id, "root": answer.root}
            if await self.send("market_commit", body):
                progress.sent[(challenge.id, phase)] = self.height
        elif phase == "committed":
            open_seed = challenge.open_seed or await self._block_hash(challenge.committed_at)
            if not open_seed:
                return
            answer = progress.answers.get(challenge.id)
            if answer is None:
                answer = await asyncio.to_thread(solve, challenge.seed, challenge.size)
            values, proofs = answer.open(open_seed, challenge.cells)
            body = {"challenge": challenge.id, "values": values, "proofs": proofs}
            if await self.send("market_open", body):
                progress.sent[(challenge.id, phase)] = self.height
                progress.answers.pop(challenge.id, None)

    def offer_for(self, order: MarketOrder) -> tuple[Hardware, int] | str:
        """The exact hardware and price this provider would bid, or why it will not bid."""
        me, offer = self.me, self.config.offer
        if me is None or not me.active:
            return "this provider is not active"
        if order.tenant == self.address:
            return "it is this provider's own order"
        need, mine = order.need, offer.hardware
        give = Hardware(
            need.cpu, need.mem, need.gpu, mine.gpu_model if need.gpu else "", mine.region
        )
        free = {k: getattr(me.hardware, k) - getattr(me.used, k) for k in ("cpu", "mem", "gpu")}
        for name in ("cpu", "mem", "gpu"):
            if getattr(give, name) > free[name]:
                return f"needs {name}={getattr(give, name)}, {free[name]} free"
        if need.gpu_model and need.gpu_model != mine.gpu_model:
            return f"needs a {need.gpu_model}, this machine has {mine.gpu_model or 'no GPU'}"
        if need.region and need.region != mine.region:
            return f"needs region {need.region}"
        if order.auditor and me.attestations.get(order.auditor) != me.attributes_hash:
            return f"needs attributes attested by {order.auditor[:12]}…"
        price = offer.quote(Hardware(**need.model_dump()), self.block_time)
        if price > order.max_price:
            return f"max price {order.max_price} is below this provider's {price} units/block"
        if self.config.policy == "max":
            price = order.max_price
        return give, price

    async def _bid(self) -> None:
        progress = self.progress
        for order in await self.ledger.market_orders(status="open"):
            if order.id in progress.bid_orders or order.id in progress.skipped_orders:
                continue
            decision = self.offer_for(order)
            if isinstance(decision, str):
                log.info("not bidding on order %d: %s", order.id, decision)
                progress.skipped_orders.add(order.id)
                continue
            detail = await self.ledger.market_order(order.id)
            if any(b.provider == self.address and b.status == "open" for b in detail.bid_details):
                progress.bid_orders.add(order.id)
                continue
            give, price = decision
            body = {"order": order.id, "price": price, **give.to_json()}
            if await self.send("market_bid", body):
                progress.bid_orders.add(order.id)
                log.info("bid %d units/block on order %d", price, order.id)

    # -- running ---------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Step every poll until asked to stop. Ledger hiccups are logged and retried."""
        while not self._stop.is_set():
            try:
                await self.step()
            except NodeError as error:
                log.warning("ledger: %s", error)
            except Exception:
                log.exception("provider step failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.config.poll_s)

    async def serve(self, on_ready: Any = None) -> int:
        """Serve HTTP and run the loop until SIGTERM/SIGINT; stop every workload on the way
        out. Returns an exit code."""
        server = server_for(create_provider_app(self))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        try:
            sockets = [self._sock] if self._sock is not None else None
            server_task = asyncio.create_task(server.serve(sockets=sockets))
            while not server.started and not server_task.done():
                await asyncio.sleep(0.01)
            if on_ready is not None:
                on_ready()
            await self.run()
            server.should_exit = True
            with contextlib.suppress(SystemExit):
                await server_task
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await asyncio.to_thread(self.workloads.stop_all)
            await self.ledger.aclose()
        return 0

    # -- what the HTTP side asks -----------------------------------------------------------

    async def lease_for(self, lease_id: int, caller: str) -> MarketLease:
        """The lease if ``caller`` is its tenant. Raises WorkloadError (404/403)."""
        lease = self.leases.get(lease_id)
        if lease is None:
            try:
                lease = await self.ledger.market_lease(lease_id)
            except NodeError:
                lease = None
            if lease is None or lease.provider != self.address:
                raise WorkloadError(404, "unknown_lease", f"no lease {lease_id} here")
            self.leases[lease_id] = lease
            if lease.status == "open":
                self.workloads.prepare(lease_id, Hardware(**lease.hardware.model_dump()))
        if lease.tenant != caller:
            raise WorkloadError(403, "not_tenant", f"only the tenant of lease {lease_id} may")
        return lease

    def start_ray(
        self, lease_id: int, role: str, address: str | None, token: str | None
    ) -> tuple[str, str]:
        """Start a Ray head or a worker joining ``address``; returns (address, token).

        Each cluster has its own auth token (Ray's token authentication): the head's is made
        here and handed to the tenant only, who passes it to the workers and to its jobs."""
        if not self.config.ray:
            raise WorkloadError(409, "ray_disabled", "this provider was not started with --ray")
        workload = self.workloads.get(lease_id)
        if workload.stopped:
            raise WorkloadError(409, "lease_closed", f"lease {lease_id} has ended")
        cpus = str(workload.hardware.cpu)
        temp = tempfile.mkdtemp(prefix=f"ray-{lease_id}-", dir="/tmp")
        ray = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block"]
        mem = workload.hardware.mem * 1024 * 1024
        common = ["--num-cpus", cpus, "--num-gpus", str(workload.hardware.gpu)]
        common += ["--memory", str(mem), "--object-store-memory", str(max(100 << 20, mem // 4))]
        if role == "head":
            token = secrets.token_hex(32)
            port = _free_port(self.config.host)
            command = [
                *ray,
                "--head",
                "--node-ip-address",
                self.config.host,
                "--port",
                str(port),
                "--include-dashboard=false",
                "--temp-dir",
                temp,
                *common,
            ]
            result = f"{self.config.host}:{port}"
        else:
            if not address or not token:
                raise WorkloadError(
                    400, "bad_request", "a worker needs the head's address and token"
                )
            command = [*ray, "--address", address, "--node-ip-address", self.config.host]
            command += common
            result = address
        assert token is not None
        env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
        self.workloads.add_process(lease_id, command, env)
        self.ray_addresses[lease_id] = result
        return result, token


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class RunRequest(BaseModel):
    argv: list[str] = Field(description="The command to run in the lease's working directory.")
    files: dict[str, str] = Field(default_factory=dict, description="name -> base64 content.")
    env: dict[str, str] = Field(default_factory=dict)


class RayRequest(BaseModel):
    role: Literal["head", "worker"]
    address: str | None = None
    token: str | None = Field(None, description="The cluster's auth token (workers).")


class _AnyCaller:
    """The guard's standing check: any signed caller may talk; each endpoint then checks that
    the caller is the lease's tenant."""

    async def __call__(self, hotkey: str, /) -> CallerStanding:
        return CallerStanding(True, 0)


def create_provider_app(agent: ProviderAgent) -> FastAPI:
    app = FastAPI(title="Agora provider", docs_url=None, redoc_url=None)
    guard = RequestGuard(GuardConfig(hotkey=agent.address, max_body_bytes=16 << 20), _AnyCaller())
    app.add_middleware(AgoraGuardMiddleware, guard=guard, public_paths={"/health"})

    @app.exception_handler(WorkloadError)
    async def workload_error(request: Request, error: WorkloadError) -> JSONResponse:
        body = {"error": {"code": error.code, "message": str(error)}}
        return JSONResponse(body, error.status)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "address": agent.address,
            "url": agent.config.url,
            "height": agent.height,
            "leases": [x for x in agent.workloads.known() if agent.workloads.get(x).running],
        }

    def describe(lease_id: int) -> dict[str, Any]:
        workload = agent.workloads.get(lease_id)
        return {
            "lease": lease_id,
            "running": workload.running,
            "exit_code": workload.exit_code,
            "started_at": workload.started_at,
            "stopped": workload.stopped,
            "ray": agent.ray_addresses.get(lease_id),
        }

    @app.post("/v1/leases/{lease_id}/run", status_code=202)
    async def run(lease_id: int, request: RunRequest, signed: Signed) -> dict[str, Any]:
        lease = await agent.lease_for(lease_id, signed.caller)
        if lease.status != "open":
            raise WorkloadError(409, "lease_closed", f"lease {lease_id} is closed")
        try:
            files = {
                name: base64.b64decode(data, validate=True) for name, data in request.files.items()
            }
        except ValueError:
            raise WorkloadError(400, "bad_request", "files must be base64") from None
        agent.workloads.start(lease_id, request.argv, files, request.env)
        return describe(lease_id)

    @app.get("/v1/leases/{lease_id}")
    async def status(lease_id: int, signed: Signed) -> dict[str, Any]:
        await agent.lease_for(lease_id, signed.caller)
        return describe(lease_id)

    @app.get("/v1/leases/{lease_id}/logs")
    async def logs(lease_id: int, signed: Signed, offset: int = Query(0, ge=0)) -> dict[str, Any]:
        await agent.lease_for(lease_id, signed.caller)
        data, next_offset = agent.workloads.read_log(lease_id, offset)
        return {
            **describe(lease_id),
            "offset": offset,
            "next": next_offset,
            "data": data.decode("utf-8", errors="replace"),
        }

    @app.get("/v1/leases/{lease_id}/files/{path:path}")
    async def file(lease_id: int, path: str, signed: Signed) -> Response:
        await agent.lease_for(lease_id, signed.caller)
        data = agent.workloads.read_file(lease_id, path)
        return Response(data, media_type="application/octet-stream")

    @app.post("/v1/leases/{lease_id}/ray")
    async def ray(lease_id: int, request: RayRequest, signed: Signed) -> dict[str, Any]:
        lease = await agent.lease_for(lease_id, signed.caller)
        if lease.status != "open":
            raise WorkloadError(409, "lease_closed", f"lease {lease_id} is closed")
        address, token = agent.start_ray(lease_id, request.role, request.address, request.token)
        return {**describe(lease_id), "ray": address, "ray_token": token}

    return app
