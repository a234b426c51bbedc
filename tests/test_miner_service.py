"""The miner end to end: a real ledger node (dev genesis, a subnet, a registered caller), real
miners serving minilm embeddings and the tiny LM over uvicorn on loopback, and signed calls.

The miners run in-process on a background event loop (so tests can look at their batchers);
the SIGTERM test in ``test_miner_shutdown.py`` runs one as a real subprocess through the CLI.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from agora.chain.client import LedgerClient
from agora.chain.testing import free_port, wait_until_ready
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.miner import Miner, MinerCallError, MinerClient, MinerConfig, answer_price
from agora.miner.ledger import ensure_endpoint, ensure_registered
from agora.net import (
    RECEIPT_HEADER,
    InvalidReceipt,
    Receipt,
    decode_receipt_header,
    sign_request,
    verify_receipt,
)
from agora.protocol.units import TOKEN

T = TypeVar("T")

CALLER = Keypair.from_name("bob/hot")  # registered on the subnet by bob
STRANGER = Keypair.from_name("eve/hot")  # never registered
GATEWAY = Keypair.from_name("dave/hot")  # not registered, but on the embed miner's --allow list
EMBED_MINER = "charlie"  # dev keys: coldkey charlie, hotkey charlie/hot
GENERATE_MINER = "ferdie"
PRICE = 2_000_000  # units per 1,000 tokens (--price 0.002)

TEXTS = [
    f"sentence {i}: the network pays miners for honest work on topic {i % 5}" for i in range(16)
]
PROMPTS = [f"Prompt {i}: tell me about subnet {i % 3}" for i in range(16)]


class LoopThread:
    """An event loop on a background thread, where the miners live."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Network:
    url: str
    netuid: int
    data_dir: Path


async def _send(client: LedgerClient, key: Keypair, kind: str, body: dict[str, Any]) -> None:
    chain_id = (await client.status()).chain_id
    nonce = await client.next_nonce(key.address)
    tx = sign_transaction(key, chain_id, kind, nonce, body)
    info = await client.wait_for_tx(await client.submit(tx), timeout=30)
    assert info.status == "included", info


async def _setup_subnet(url: str) -> int:
    async with LedgerClient(url) as client:
        await _send(client, Keypair.from_name("alice"), "create_subnet", {})
        netuid = (await client.subnets())[-1].netuid
        body = {"netuid": netuid, "hotkey": CALLER.address}
        await _send(client, Keypair.from_name("bob"), "register", body)
        return netuid


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    data_dir = tmp_path_factory.mktemp("miner-net")
    port = free_port()
    log = (data_dir / "node.log").open("wb")
    node = subprocess.Popen(
        [sys.executable, "-m", "agora.chain", "start", "--dev", "--data-dir",
         str(data_dir / "node"), "--port", str(port), "--block-time", "0.2"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{url}/v1/status", 30, node)
        netuid = asyncio.run(_setup_subnet(url))
        yield Network(url, netuid, data_dir)
    finally:
        node.terminate()
        node.wait(15)
        log.close()


@dataclass
class Running:
    miner: Miner
    done: Any
    loop: LoopThread

    @property
    def url(self) -> str:
        return self.miner.url

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the miner's own event loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop.loop))


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


async def _create(network: Network, dev_key: str, **options: Any) -> Miner:
    config = MinerConfig(
        netuid=network.netuid,
        data_dir=network.data_dir,
        port=0,
        node_url=network.url,
        price_per_1k=PRICE,
        tx_timeout_s=30,
        **options,
    )
    hotkey = Keypair.from_name(dev_key + "/hot")
    return await Miner.create(config, hotkey, coldkey=lambda: Keypair.from_name(dev_key))


@pytest.fixture(scope="module")
def miners(loop_thread: LoopThread, network: Network) -> Iterator[dict[str, Running]]:
    """Both miners, set up side by side (their models load at the same time)."""

    async def create_both() -> list[Miner]:
        return list(
            await asyncio.gather(
                _create(network, EMBED_MINER, model="embed:minilm", allow={GATEWAY.address}),
                _create(network, GENERATE_MINER, model="generate:tiny"),
            )
        )

    running = {}
    for name, miner in zip(("embed", "generate"), loop_thread.run(create_both()), strict=True):
        done = asyncio.run_coroutine_threadsafe(miner.serve(handle_signals=False), loop_thread.loop)
        loop_thread.run(miner.started())
        running[name] = Running(miner, done, loop_thread)
    yield running
    for each in running.values():
        loop_thread.loop.call_soon_threadsafe(each.miner.request_stop)
    for each in running.values():
        assert each.done.result(30) == 0


@pytest.fixture(scope="module")
def embed_miner(miners: dict[str, Running]) -> Running:
    return miners["embed"]


@pytest.fixture(scope="module")
def generate_miner(miners: dict[str, Running]) -> Running:
    return miners["generate"]


def client(running: Running, caller: Keypair = CALLER) -> MinerClient:
    return MinerClient(running.url, caller, running.miner.address)


# -- the ledger -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_registration_and_endpoint_land_on_the_ledger(
    network: Network, embed_miner: Running, generate_miner: Running
) -> None:
    async with LedgerClient(network.url) as ledger:
        metagraph = await ledger.metagraph(network.netuid)
        by_hotkey = {n.hotkey: n for n in metagraph.neurons}
        for running, owner in ((embed_miner, EMBED_MINER), (generate_miner, GENERATE_MINER)):
            neuron = by_hotkey[running.miner.address]
            assert neuron.coldkey == Keypair.from_name(owner).address
            assert neuron.endpoint is not None
            assert (neuron.endpoint.ip, neuron.endpoint.port, neuron.endpoint.protocol) == (
                "127.0.0.1",
                running.miner.port,
                "http",
            )
            assert running.miner.neuron.uid == neuron.uid
        # the registration burnt tokens from the miner's coldkey
        account = await ledger.account(Keypair.from_name(EMBED_MINER).address)
        assert account.balance < 10_000 * TOKEN
        # starting again changes nothing: already registered, the same endpoint announced
        hotkey = Keypair.from_name(EMBED_MINER + "/hot")
        neuron = await ensure_registered(ledger, network.netuid, hotkey.address, coldkey=None)
        assert neuron.uid == by_hotkey[hotkey.address].uid
        sent = await ensure_endpoint(
            ledger, network.netuid, hotkey, "127.0.0.1", embed_miner.miner.port
        )
        assert sent is False


@pytest.mark.anyio
async def test_no_register_refuses_to_pay(network: Network) -> None:
    config = MinerConfig(
        netuid=network.netuid,
        model="generate:tiny",
        data_dir=network.data_dir,
        port=0,
        node_url=network.url,
        register=False,
    )
    from agora.miner import HotkeyNotRegistered

    with pytest.raises(HotkeyNotRegistered, match="--no-register"):
        await Miner.create(config, Keypair.from_name("nobody/hot"))


# -- answers and receipts ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_signed_embed_round_trip(embed_miner: Running) -> None:
    async with client(embed_miner) as miner:
        health = await miner.health()
        answer, receipt = await miner.embed(TEXTS[:3])  # the client verified the receipt
    assert health.status == "ok" and health.task == "embed"
    assert health.hotkey == embed_miner.miner.address
    assert answer.model == health.model == receipt.model_id
    assert answer.model.startswith("embed:minilm@")
    assert len(answer.embeddings) == 3 and all(len(v) == 384 for v in answer.embeddings)
    assert all(abs(sum(x * x for x in v) - 1.0) < 1e-4 for v in answer.embeddings)
    engine = embed_miner.miner.engine
    counts = [await embed_miner.call(engine.count_tokens(t)) for t in TEXTS[:3]]
    assert answer.usage.prompt_tokens == receipt.prompt_tokens == sum(counts)
    assert receipt.completion_tokens == 0
    assert receipt.price == -(-sum(counts) * PRICE // 1000) == answer_price(sum(counts), PRICE)
    assert receipt.caller == CALLER.address and receipt.miner == embed_miner.miner.address
    assert receipt.netuid == embed_miner.miner.config.netuid
    assert engine.model_id == receipt.model_id


@pytest.mark.anyio
async def test_signed_generate_and_score_round_trip(generate_miner: Running) -> None:
    async with client(generate_miner) as miner:
        answer, receipt = await miner.generate("Hello, miner", max_tokens=12)
        scored, score_receipt = await miner.score("Hello, miner", answer.token_ids)
    assert answer.model == receipt.model_id and answer.model.startswith("generate:tiny@")
    assert len(answer.token_ids) == answer.usage.completion_tokens == receipt.completion_tokens
    assert answer.usage.prompt_tokens == receipt.prompt_tokens == len("Hello, miner") + 1  # BOS
    assert receipt.price == answer_price(answer.usage.total_tokens, PRICE)
    assert answer.seed is None and answer.finish_reason in ("stop", "length")
    assert len(scored.logprobs) == len(answer.token_ids)
    assert all(lp <= 0 for lp in scored.logprobs)
    assert score_receipt.prompt_tokens == receipt.prompt_tokens + len(answer.token_ids)


@pytest.mark.anyio
async def test_receipt_in_header_and_body_and_tampering_fails(embed_miner: Running) -> None:
    body = json.dumps({"texts": ["a receipt for this"]}).encode()
    miner = embed_miner.miner
    async with httpx.AsyncClient(base_url=miner.url) as http:
        headers = sign_request(CALLER, miner.address, "POST", "/v1/embed", body)
        response = await http.post("/v1/embed", content=body, headers=headers)
    assert response.status_code == 200
    from_header = decode_receipt_header(response.headers[RECEIPT_HEADER])
    from_body = Receipt.from_json(response.json()["agora_receipt"])
    assert from_header == from_body
    assert from_header.nonce == headers["X-Agora-Nonce"]
    verify_receipt(from_body, body, response.content, miner=miner.address)

    tampered = {**from_body.to_json(), "price": from_body.price + 1}
    with pytest.raises(InvalidReceipt, match="bad signature"):
        verify_receipt(tampered, body, response.content)
    altered = response.json()
    altered["embeddings"][0][0] += 0.5
    with pytest.raises(InvalidReceipt, match="response hash mismatch"):
        verify_receipt(from_body, body, json.dumps(altered).encode())
    with pytest.raises(InvalidReceipt, match="request hash mismatch"):
        verify_receipt(from_body, body.replace(b"this", b"that"), response.content)
    with pytest.raises(InvalidReceipt, match="wrong miner"):
        verify_receipt(from_body, miner=STRANGER.address)


@pytest.mark.anyio
async def test_wire_rejections_reach_the_client(embed_miner: Running) -> None:
    async with client(embed_miner, STRANGER) as stranger:
        with pytest.raises(MinerCallError) as refused:
            await stranger.embed(["hello"])
    assert (refused.value.status, refused.value.reason) == (403, "caller_not_registered")

    async with client(embed_miner, GATEWAY) as gateway:  # unregistered, but allowed
        answer, receipt = await gateway.embed(["hello"])
    assert receipt.caller == GATEWAY.address and len(answer.embeddings) == 1

    miner = embed_miner.miner
    body = b'{"texts":["once only"]}'
    headers = sign_request(CALLER, miner.address, "POST", "/v1/embed", body)
    async with httpx.AsyncClient(base_url=miner.url) as http:
        first = await http.post("/v1/embed", content=body, headers=headers)
        replay = await http.post("/v1/embed", content=body, headers=headers)
        unsigned = await http.post("/v1/embed", content=body)
        wrong_callee = await http.post(
            "/v1/embed",
            content=body,
            headers=sign_request(CALLER, STRANGER.address, "POST", "/v1/embed", body),
        )
    assert first.status_code == 200
    assert (replay.status_code, replay.json()["error"]["code"]) == (409, "reused_nonce")
    assert (unsigned.status_code, unsigned.json()["error"]["code"]) == (401, "missing_signature")
    assert wrong_callee.status_code == 421


@pytest.mark.anyio
async def test_bad_requests_get_clear_errors(embed_miner: Running, generate_miner: Running) -> None:
    async with client(embed_miner) as miner:
        with pytest.raises(MinerCallError) as wrong_task:
            await miner.generate("embedders do not generate")
        with pytest.raises(MinerCallError) as empty:
            await miner.embed([])
    assert (wrong_task.value.status, wrong_task.value.reason) == (400, "unsupported_operation")
    assert "/v1/embed" in wrong_task.value.message
    assert (empty.value.status, empty.value.reason) == (422, "invalid_request")
    async with client(generate_miner) as miner:
        with pytest.raises(MinerCallError) as too_long:
            await miner.generate("x" * 500, max_tokens=100)
    assert (too_long.value.status, too_long.value.reason) == (400, "context_too_long")


# -- batching ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_concurrent_embeddings_are_batched_and_equal_one_at_a_time(
    embed_miner: Running,
) -> None:
    batcher = embed_miner.miner.engine.embed_batcher  # type: ignore[attr-defined]
    async with client(embed_miner) as miner:
        alone = [(await miner.embed([text]))[0].embeddings[0] for text in TEXTS]
        before = len(batcher.batch_sizes)
        together = await asyncio.gather(*(miner.embed([text]) for text in TEXTS))
    assert max(batcher.batch_sizes[before:]) > 1, "the concurrent requests were not batched"
    for vector, (answer, receipt) in zip(alone, together, strict=True):
        assert max(abs(a - b) for a, b in zip(vector, answer.embeddings[0], strict=True)) < 1e-5
        assert receipt.prompt_tokens == answer.usage.prompt_tokens


@pytest.mark.anyio
async def test_concurrent_generations_equal_one_at_a_time(generate_miner: Running) -> None:
    # The transformers engine decodes concurrent requests in shared steps in the miner's engine
    # process (continuous batching; that they share steps is tested in test_models_batcher).
    async with client(generate_miner) as miner:
        alone = [(await miner.generate(p, max_tokens=16))[0] for p in PROMPTS]
        together = await asyncio.gather(*(miner.generate(p, max_tokens=16) for p in PROMPTS))
    for single, (batched, _) in zip(alone, together, strict=True):
        assert batched.token_ids == single.token_ids
        assert batched.text == single.text


@pytest.mark.anyio
async def test_stream_equals_non_streamed_generation(generate_miner: Running) -> None:
    async with client(generate_miner) as miner:
        for prompt, temperature, seed in (("Stream me", 0.0, None), ("Sample me", 0.9, 1234)):
            answer, receipt = await miner.generate(prompt, 24, temperature, seed)
            stream = miner.stream(prompt, 24, temperature, seed)
            events = [event async for event in stream]
            assert stream.receipt is not None  # checked against the raw stream
            assert stream.token_ids == answer.token_ids
            assert stream.text == answer.text
            assert events[-1].finish_reason == answer.finish_reason
            assert all(event.seed == seed for event in events)
            assert stream.receipt.completion_tokens == receipt.completion_tokens
            assert stream.receipt.prompt_tokens == receipt.prompt_tokens
            assert stream.receipt.price == receipt.price
            assert stream.raw.startswith(b"event: token\ndata: ")
            # the receipt commits to every streamed byte
            tampered = stream.raw.replace(b'"token_ids":[', b'"token_ids":[1,', 1)
            with pytest.raises(InvalidReceipt, match="response hash mismatch"):
                verify_receipt(stream.receipt, response_body=tampered)


@pytest.mark.anyio
async def test_health_counts_answers(embed_miner: Running) -> None:
    async with client(embed_miner) as miner:
        before = (await miner.health()).served
        await miner.embed(["count me"])
        health = await miner.health()
    assert health.served == before + 1
    assert health.in_flight == 0
    assert health.price_per_1k_tokens == PRICE
    assert health.model_hash.startswith(health.model.split("@")[1])


def test_status_command_reads_health(embed_miner: Running) -> None:
    from typer.testing import CliRunner

    from agora.miner.cli import app

    result = CliRunner().invoke(app, ["status", "--endpoint", embed_miner.url, "--json"])
    assert result.exit_code == 0, result.output
    health = json.loads(result.output)
    assert health["hotkey"] == embed_miner.miner.address and health["status"] == "ok"
    result = CliRunner().invoke(app, ["status", "--endpoint", embed_miner.url])
    assert result.exit_code == 0 and "0.002 tokens per 1,000 tokens" in result.output


def test_a_dead_engine_process_stops_the_miner_with_exit_1(
    loop_thread: LoopThread, network: Network
) -> None:
    miner = loop_thread.run(_create(network, "alice", model="generate:tiny"))
    done = asyncio.run_coroutine_threadsafe(miner.serve(handle_signals=False), loop_thread.loop)
    loop_thread.run(miner.started())
    os.kill(miner.engine.engine.pid, signal.SIGKILL)  # type: ignore[attr-defined]
    assert done.result(30) == 1
