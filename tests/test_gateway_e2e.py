"""The gateway end to end, in real processes on loopback, driven by the real ``openai`` client.

A ledger node (a block every 0.5 s), two subnets (1: embeddings, 2: the tiny LM), the gateway
(``python -m agora.gateway start --dev-key gateway``, registered on both) and three miners: bob
serves MiniLM on subnet 1, charlie and dave the tiny LM on subnet 2. Customers' keys are opened
as a person would (an escrow channel signed by their coldkey, then the key registered with the
gateway). The tests
check that the answers come in OpenAI's shapes with the miners' receipts, that escrow falls and
miners' balances rise by exactly what the receipts say, that a miner killed in the middle of a
stream is replaced without the client noticing, and that bad requests are refused clearly and
cost nothing. On failure every process's log is printed.

    pytest tests/test_gateway_e2e.py -m slow -s
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from agora.chain.client import LedgerClient
from agora.chain.testing import free_port, wait_until_ready
from agora.crypto.keys import Keypair
from agora.crypto.signing import sign_transaction
from agora.gateway.devnet import create_demo_key, fund_dev_gateway, gateway_command
from agora.gateway.keys import GatewayAccount, create_key_for
from agora.gateway.verify import verify_response
from agora.net.receipts import decode_receipt_header
from agora.net.signing import sign_request
from agora.protocol.units import TOKEN

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
GATEWAY_KEY = Keypair.from_name("gateway/hot")
MINERS = {"bob": (1, "embed:minilm"), "charlie": (2, "generate:tiny"), "dave": (2, "generate:tiny")}
ENV = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "AGORA_VOUCHER_REDEEM_S": "1"}
GATEWAY_CONFIG = """
redeem_interval_s = 1
voucher_flush_s = 0.5
health_interval_s = 0.5
metagraph_refresh_s = 1
min_deposit = "0.000001"
miner_deposit = "0.05"
min_blocks_left = 5
"""


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


@dataclass
class Net:
    tmp: Path
    procs: dict[str, Proc] = field(default_factory=dict)

    def spawn(self, name: str, args: list[str], url: str = "") -> Proc:
        """Start ``python <args>`` (or the full command, when it starts with sys.executable)."""
        command = args if args[0] == sys.executable else [sys.executable, *args]
        log = self.tmp / f"{name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **ENV, "PYTHONPATH": str(REPO)}
        with log.open("wb") as out:
            proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO
            )
        self.procs[name] = Proc(name, proc, log, url)
        return self.procs[name]

    @property
    def node(self) -> str:
        return self.procs["node"].url

    @property
    def gateway(self) -> str:
        return self.procs["gateway"].url

    def logs(self) -> str:
        return "\n".join(f"===== {p.name} =====\n{p.output()}" for p in self.procs.values())

    def ledger(self, fn: Callable[[LedgerClient], Any]) -> Any:
        async def go() -> Any:
            async with LedgerClient(self.node) as client:
                return await fn(client)

        return asyncio.run(go())

    def send(self, key: Keypair, kind: str, **body: Any) -> None:
        async def go(client: LedgerClient) -> None:
            nonce = await client.next_nonce(key.address)
            tx = sign_transaction(key, (await client.status()).chain_id, kind, nonce, body)
            await client.submit_and_wait(tx)

        self.ledger(go)

    def new_key(self, payer: str, tokens: float) -> dict[str, Any]:
        units = int(tokens * TOKEN)
        return asyncio.run(create_key_for(self.gateway, Keypair.from_name(payer), units))

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway + "/v1", api_key=key, max_retries=0)

    def usage(self, key: str) -> dict[str, Any]:
        response = httpx.get(
            self.gateway + "/v1/usage",
            params={"limit": 1000},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("gateway-e2e")
    network = Net(tmp)
    try:
        port = free_port()
        node = network.spawn(
            "node",
            [
                "-m",
                "agora.chain",
                "start",
                "--dev",
                "--data-dir",
                str(tmp / "node"),
                "--port",
                str(port),
                "--block-time",
                "0.5",
            ],
            f"http://127.0.0.1:{port}",
        )
        wait_until_ready(node.url + "/v1/status", 30, node.proc)
        alice = Keypair.from_name("alice")
        network.send(alice, "create_subnet")
        network.send(alice, "create_subnet")
        (tmp / "gateway.toml").write_text(GATEWAY_CONFIG)
        fund_dev_gateway(node.url)  # as `agora up` does: the dev key "gateway" is no genesis one
        port = free_port()
        gateway = network.spawn(
            "gateway",
            gateway_command(
                node.url,
                tmp / "gateway",
                port=port,
                serve={"minilm": 1, "tiny-llm": 2},
                config=tmp / "gateway.toml",
            ),
            f"http://127.0.0.1:{port}",
        )
        # The gateway registers before the miners start, so their first view of the metagraph
        # already admits it.
        wait_until_ready(gateway.url + "/health", 60, gateway.proc)
        for name, (netuid, model) in MINERS.items():
            port = free_port()
            network.spawn(
                name,
                [
                    "-m",
                    "agora.miner",
                    "start",
                    "--dev-key",
                    name,
                    "--subnet",
                    str(netuid),
                    "--model",
                    model,
                    "--port",
                    str(port),
                    "--node",
                    node.url,
                    "--yes",
                    "--data-dir",
                    str(tmp / name),
                ],
                f"http://127.0.0.1:{port}",
            )

        def all_healthy() -> bool:
            for proc in network.procs.values():
                if proc.proc.poll() is not None:
                    raise AssertionError(f"{proc.name} exited with {proc.proc.returncode}")
            health = httpx.get(gateway.url + "/health").json()["healthy_miners"]
            return bool(health == {"minilm": 1, "tiny-llm": 2})

        wait_for("three healthy miners behind the gateway", all_healthy, 120)
        yield network
    except BaseException:
        print(network.logs())
        raise
    finally:
        gateway_proc = network.procs.get("gateway")
        if gateway_proc is not None and gateway_proc.proc.poll() is None:
            gateway_proc.proc.send_signal(signal.SIGTERM)
            try:
                assert gateway_proc.proc.wait(40) == 0, "the gateway did not stop cleanly"
            except subprocess.TimeoutExpired:
                gateway_proc.proc.kill()
        for proc in network.procs.values():
            if proc.proc.poll() is None:
                proc.proc.kill()
                proc.proc.wait(10)


@pytest.fixture
def logs_on_failure(net: Net) -> Iterator[None]:
    try:
        yield
    except BaseException:
        print(net.logs())
        raise


def raw_post(net: Net, key: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(
        net.gateway + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60
    )


def test_answers_carry_receipts_and_the_escrow_pays_exactly_them(
    net: Net, logs_on_failure: None
) -> None:
    key = create_demo_key(net.gateway, dev_account="alice", deposit_tokens=2)  # as `agora up`
    client = net.client(key["key"])
    assert {m.id for m in client.models.list().data} == {"minilm", "tiny-llm"}

    texts = ["The network pays honest miners.", "Validators check their answers."]
    default = client.embeddings.create(model="minilm", input=texts)  # base64 on the wire
    floats = client.embeddings.create(model="minilm", input=texts, encoding_format="float")
    assert len(default.data) == 2 and len(default.data[0].embedding) == 384
    for a, b in zip(default.data, floats.data, strict=True):
        assert max(abs(x - y) for x, y in zip(a.embedding, b.embedding, strict=True)) < 1e-5
    assert default.usage.prompt_tokens > 0 and default.model == "minilm"
    assert default.model_extra is not None and "agora_receipt" in default.model_extra

    chat = {
        "model": "tiny-llm",
        "messages": [{"role": "user", "content": "Hello there"}],
        "max_tokens": 24,
        "temperature": 0,
    }
    answer = client.chat.completions.create(**chat)  # type: ignore[call-overload]
    text = answer.choices[0].message.content
    assert isinstance(text, str) and answer.usage is not None
    assert answer.usage.completion_tokens == 24 and answer.choices[0].finish_reason == "length"
    assert answer.system_fingerprint.startswith("generate:tiny@")

    pieces, final = [], None
    for chunk in client.chat.completions.create(
        **chat, stream=True, stream_options={"include_usage": True}
    ):  # type: ignore[call-overload]
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            if chunk.choices[0].finish_reason:
                final = chunk
        else:
            assert chunk.usage.completion_tokens == 24
    assert "".join(pieces) == text  # greedy: the same tokens streamed
    assert final is not None and "agora_receipt" in (final.model_extra or {})

    completion = client.completions.create(
        model="tiny-llm", prompt="Once", max_tokens=8, temperature=0.7, seed=42
    )
    again = client.completions.create(
        model="tiny-llm", prompt="Once", max_tokens=8, temperature=0.7, seed=42
    )
    assert completion.choices[0].text == again.choices[0].text  # seeded sampling replays
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="tiny-llm", prompt="Once", max_tokens=8, temperature=0.7, seed=42, stream=True
        )
        if c.choices
    )
    assert streamed == completion.choices[0].text

    # Raw answers verify offline against their receipts, header and body alike.
    charged = []
    requests = [
        ("/v1/embeddings", {"model": "minilm", "input": texts}),
        ("/v1/embeddings", {"model": "minilm", "input": "one", "encoding_format": "base64"}),
        ("/v1/chat/completions", chat),
        ("/v1/completions", {"model": "tiny-llm", "prompt": "Hi", "max_tokens": 5}),
    ]
    for path, body in requests:
        response = raw_post(net, key["key"], path, body)
        assert response.status_code == 200, response.text
        receipt = verify_response(body, response.content, gateway=GATEWAY_KEY.address)
        assert decode_receipt_header(response.headers["x-agora-receipt"]) == receipt
        charged.append(response.json()["agora_charged"])
    with httpx.stream(
        "POST",
        net.gateway + "/v1/chat/completions",
        json={**chat, "stream": True},
        headers={"Authorization": f"Bearer {key['key']}"},
    ) as response:
        stream = response.read()
    receipt = verify_response({**chat, "stream": True}, stream, gateway=GATEWAY_KEY.address)
    assert receipt.completion_tokens == 24

    # The key was charged exactly the receipts' prices; the ledger pays the gateway exactly that
    # from the escrow; each miner's balance rises by exactly its receipts.
    usage = net.usage(key["key"])
    rows = usage["recent"]
    assert len(rows) == 12 and usage["totals"]["requests"] == 12
    assert all(row["charged"] == row["price"] == row["receipt"]["price"] > 0 for row in rows)
    total = sum(row["price"] for row in rows)
    assert usage["key"]["spent"] == total and set(charged) <= {row["charged"] for row in rows}
    wait_for(
        "the escrow to be redeemed",
        lambda: net.ledger(lambda c: c.channel(key["channel"])).redeemed == total,
    )
    channel = net.ledger(lambda c: c.channel(key["channel"]))
    assert (
        channel.remaining == 2 * TOKEN - total and net.usage(key["key"])["key"]["redeemed"] == total
    )
    owed: dict[str, int] = {}
    for row in rows:
        owed[row["miner"]] = owed.get(row["miner"], 0) + row["price"]
    assert Keypair.from_name("bob/hot").address in owed

    def miners_paid() -> bool:
        balances = net.ledger(lambda c: asyncio.gather(*(c.account(m) for m in owed)))
        return [b.balance for b in balances] == list(owed.values())

    wait_for("every miner to redeem exactly its receipts", miners_paid, 30)


def test_a_miner_killed_mid_stream_is_replaced(net: Net, logs_on_failure: None) -> None:
    key = net.new_key("bob", 1)
    request = {
        "model": "tiny-llm",
        "messages": [{"role": "user", "content": "Tell me a story"}],
        "max_tokens": 440,
        "temperature": 0,
    }
    reference = raw_post(net, key["key"], "/v1/chat/completions", request).json()
    expected = reference["choices"][0]["message"]["content"]
    generators = {name: net.procs[name] for name in ("charlie", "dave")}

    raw = b""
    killed = None
    with httpx.stream(
        "POST",
        net.gateway + "/v1/chat/completions",
        timeout=60,
        json={**request, "stream": True},
        headers={"Authorization": f"Bearer {key['key']}"},
    ) as response:
        assert response.status_code == 200
        for data in response.iter_bytes():
            raw += data
            if killed is None and raw.count(b"agora_token_ids") >= 5:
                for name, proc in generators.items():
                    health = httpx.get(proc.url + "/health", timeout=5).json()
                    if health["in_flight"] > 0:
                        proc.proc.send_signal(signal.SIGKILL)
                        proc.proc.wait(10)
                        killed = name
                        break
    assert killed is not None, "no generating miner was busy with the stream"
    receipt = verify_response({**request, "stream": True}, raw, gateway=GATEWAY_KEY.address)
    survivor = next(n for n in generators if n != killed)
    assert receipt.miner == Keypair.from_name(f"{survivor}/hot").address
    text = "".join(
        (chunk["choices"][0]["delta"].get("content") or "")
        for line in raw.split(b"\n\n")
        if line.startswith(b"data: {") and (chunk := json.loads(line[6:]))["choices"]
    )
    assert text == expected and receipt.completion_tokens == 440
    rows = net.usage(key["key"])["recent"]
    # Two charges: the reference answer, and the stream, to the survivor at its receipt's price.
    assert len(rows) == 2 and rows[0]["miner"] == receipt.miner
    assert rows[0]["price"] == rows[0]["charged"] == receipt.price


def test_bad_requests_are_refused_clearly_and_cost_nothing(net: Net, logs_on_failure: None) -> None:
    key = net.new_key("charlie", 1)
    client = net.client(key["key"])

    def error(call: Callable[[], Any], status: type[openai.APIStatusError]) -> dict[str, Any]:
        with pytest.raises(status) as caught:
            call()
        body = caught.value.body
        assert isinstance(body, dict) and set(body) >= {"message", "type", "param", "code"}
        return body

    unknown = error(
        lambda: client.embeddings.create(model="gpt-5", input="x"), openai.NotFoundError
    )
    assert unknown["code"] == "model_not_found" and "minilm" in unknown["message"]
    long_text = "word " * 400
    context = error(
        lambda: client.embeddings.create(model="minilm", input=["ok", long_text]),
        openai.BadRequestError,
    )
    assert context["code"] == "context_length_exceeded" and "256" in context["message"]
    chat = error(
        lambda: client.chat.completions.create(
            model="tiny-llm", messages=[{"role": "user", "content": "x" * 600}]
        ),
        openai.BadRequestError,
    )
    assert chat["code"] == "context_length_exceeded" and "512" in chat["message"]
    big = error(
        lambda: client.completions.create(model="tiny-llm", prompt="hi", max_tokens=600),
        openai.BadRequestError,
    )
    assert big["code"] == "context_length_exceeded"
    stop = error(
        lambda: client.chat.completions.create(
            model="tiny-llm", messages=[{"role": "user", "content": "x"}], stop=["\n"]
        ),
        openai.BadRequestError,
    )
    assert stop["param"] == "stop" and stop["code"] == "unsupported_parameter"
    wrong = error(
        lambda: client.chat.completions.create(
            model="minilm", messages=[{"role": "user", "content": "x"}]
        ),
        openai.BadRequestError,
    )
    assert wrong["code"] == "wrong_endpoint"
    bad_key = error(
        lambda: net.client("sk-agora-not-a-key").embeddings.create(model="minilm", input="x"),
        openai.AuthenticationError,
    )
    assert bad_key["code"] == "invalid_api_key"
    malformed = httpx.post(
        net.gateway + "/v1/embeddings",
        content=b'{"model": "minilm", input',
        headers={"Authorization": f"Bearer {key['key']}"},
    )
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == "invalid_json"
    no_key = httpx.post(net.gateway + "/v1/embeddings", json={"model": "minilm", "input": "x"})
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "missing_api_key"
    assert net.usage(key["key"])["totals"]["requests"] == 0
    assert net.usage(key["key"])["key"]["spent"] == 0  # none of that cost anything

    # A small escrow runs out: 402 with the balance and how to top up, and nothing over it.
    small = net.new_key("dave", 0.00002)  # 20,000 units: a few embeddings
    poor = net.client(small["key"])
    served = 0
    with pytest.raises(openai.APIStatusError) as exhausted:
        for _ in range(50):
            poor.embeddings.create(model="minilm", input="hello world")
            served += 1
    assert exhausted.value.status_code == 402 and served >= 1
    body = exhausted.value.body
    assert isinstance(body, dict) and body["code"] == "insufficient_escrow"
    assert "top-up" in body["message"] and body["available"] < body["needed"]
    spent = net.usage(small["key"])["key"]["spent"]
    assert 0 < spent <= 20_000 and net.usage(small["key"])["totals"]["requests"] == served

    async def top_up() -> dict[str, Any]:
        async with GatewayAccount(net.gateway, Keypair.from_name("dave")) as account:
            return await account.top_up(small["key_id"], 100_000)

    assert asyncio.run(top_up())["deposit"] == 120_000
    assert poor.embeddings.create(model="minilm", input="hello world").data


def test_miners_keep_only_genuine_vouchers(net: Net, logs_on_failure: None) -> None:
    miner = Keypair.from_name("bob/hot")
    bob = net.procs["bob"].url

    def settled() -> list[int] | None:  # the genuine vouchers of earlier tests are redeemed
        first = net.ledger(lambda c: c.account(miner.address)).balance
        time.sleep(1.5)
        same = net.ledger(lambda c: c.account(miner.address)).balance == first
        return [first] if same else None

    [before] = wait_for("bob's balance to settle", settled)
    channels = net.ledger(lambda c: c.channels(miner.address, role="payee"))
    assert channels and all(c.payer == GATEWAY_KEY.address for c in channels)
    channel = channels[-1]
    forger = Keypair.from_name("mallory")
    from agora.gateway.ledger import FastKey, Voucher

    chain_id = net.ledger(lambda c: c.status()).chain_id
    for voucher, code in [
        (Voucher.sign(FastKey(forger), chain_id, channel.id, channel.deposit), "bad_signature"),
        (
            Voucher.sign(FastKey(GATEWAY_KEY), chain_id, channel.id, channel.deposit + 1),
            "over_deposit",
        ),
    ]:
        headers = sign_request(GATEWAY_KEY, miner.address, "POST", "/v1/payments/voucher", b"{}")
        headers["X-Agora-Voucher"] = voucher.header
        response = httpx.post(bob + "/v1/payments/voucher", content=b"{}", headers=headers)
        assert response.status_code == 422 and response.json()["error"]["code"] == f"voucher_{code}"
    unsigned = httpx.post(
        bob + "/v1/payments/voucher",
        content=b"{}",
        headers={"X-Agora-Voucher": f"{channel.id},1,{'0' * 128}"},
    )
    assert unsigned.status_code == 401
    time.sleep(1.5)  # a redemption round of the miner
    assert net.ledger(lambda c: c.account(miner.address)).balance == before


def test_the_cli_creates_lists_and_reports_keys(net: Net, logs_on_failure: None) -> None:
    def cli(*args: str) -> Any:
        done = subprocess.run(
            [sys.executable, "-m", "agora.gateway", *args, "--gateway", net.gateway, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    new = cli("keys", "new", "--dev-key", "eve", "--deposit", "0.5", "--label", "cli")
    assert new["key"].startswith("sk-agora-") and new["deposit"] == TOKEN // 2
    listed = cli("keys", "list", "--dev-key", "eve")
    assert [k["key_id"] for k in listed] == [new["key_id"]] and "key" not in listed[0]
    net.client(new["key"]).embeddings.create(model="minilm", input="cli")
    report = cli("usage", "--key", new["key"])
    assert report["totals"]["requests"] == 1 and report["key"]["label"] == "cli"
    assert report["totals"]["by_miner"][0]["miner"] == Keypair.from_name("bob/hot").address

    # A saved answer checks out offline; a doctored one does not.
    request = {"model": "minilm", "input": ["check me"]}
    answer = raw_post(net, new["key"], "/v1/embeddings", request)
    (net.tmp / "request.json").write_text(json.dumps(request))
    (net.tmp / "answer.json").write_bytes(answer.content)
    doctored = answer.json()
    doctored["data"][0]["embedding"][0] += 0.5
    (net.tmp / "doctored.json").write_text(json.dumps(doctored))
    for name, expected in (("answer.json", 0), ("doctored.json", 1)):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "agora.gateway",
                "verify",
                str(net.tmp / name),
                "--request",
                str(net.tmp / "request.json"),
                "--gateway-address",
                GATEWAY_KEY.address,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert done.returncode == expected, done.stdout + done.stderr
    assert "response hash mismatch" in done.stderr
