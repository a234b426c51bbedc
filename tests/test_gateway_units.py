"""The gateway's parts in-process: OpenAI request parsing, token counting, the response builders,
offline verification, routing policy, the HTTP client, the store and the configuration."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from agora.chain.testing import free_port, running_app
from agora.crypto.keys import Keypair
from agora.gateway.config import DEFAULT_MODELS, GatewayConfig, ModelRoute, load_config
from agora.gateway.errors import BadRequest, GatewayConfigError
from agora.gateway.forward import embed_body, embedding_rows, generate_body
from agora.gateway.httpclient import HttpPool, UpstreamError
from agora.gateway.openai_api import (
    embeddings_response,
    generation_response,
    parse_chat,
    parse_completions,
    parse_embeddings,
    parse_json_body,
)
from agora.gateway.routing import MinerInfo, Router
from agora.gateway.store import GatewayStore, UsageRow
from agora.gateway.tokens import load_counter, render_chat
from agora.gateway.verify import verify_response
from agora.miner.core import normalized_json
from agora.net.errors import InvalidReceipt
from agora.net.receipts import json_hash, make_receipt
from agora.protocol.codec import canonical_bytes

MINER = Keypair.from_name("bob/hot")
GATEWAY = Keypair.from_name("ferdie/hot")


# -- OpenAI requests ------------------------------------------------------------------------


def error_of(call: Any, data: dict[str, Any]) -> BadRequest:
    with pytest.raises(BadRequest) as caught:
        call(data)
    return caught.value


def test_embeddings_requests_are_read_strictly() -> None:
    call = parse_embeddings({"model": "minilm", "input": "hi", "encoding_format": "base64"})
    assert call.texts == ["hi"] and call.encoding_format == "base64"
    assert parse_embeddings({"model": "m", "input": ["a", "b"]}).encoding_format == "float"
    unknown = error_of(parse_embeddings, {"model": "m", "input": "a", "temperature": 1})
    assert unknown.param == "temperature" and unknown.code == "unknown_parameter"
    dims = error_of(parse_embeddings, {"model": "m", "input": "a", "dimensions": 64})
    assert dims.param == "dimensions" and dims.code == "unsupported_parameter"
    assert error_of(parse_embeddings, {"model": "m", "input": [[1, 2]]}).param == "input"
    assert error_of(parse_embeddings, {"model": "m", "input": ""}).param == "input"
    assert error_of(parse_embeddings, {"input": "a"}).param == "model"
    assert error_of(parse_embeddings, {"model": "m", "input": ["a"] * 257}).param == "input"
    body = error_of(parse_embeddings, {"model": "m", "input": "a", "encoding_format": "int8"})
    assert body.to_json()["error"].keys() == {"message", "type", "param", "code"}


def test_chat_requests_accept_neutral_values_and_refuse_the_rest() -> None:
    base = {"model": "tiny-llm", "messages": [{"role": "user", "content": "hi"}]}
    call = parse_chat({**base, "n": 1, "top_p": 1, "stop": None, "presence_penalty": 0})
    assert call.temperature == 1.0 and call.max_tokens is None and not call.stream
    assert parse_chat({**base, "max_completion_tokens": 7}).max_tokens == 7
    for name, value in [("n", 2), ("stop", ["\n"]), ("top_p", 0.5), ("tools", [{"x": 1}])]:
        error = error_of(parse_chat, {**base, name: value})
        assert error.param == name and error.code == "unsupported_parameter", name
    assert error_of(parse_chat, {**base, "temperature": 3}).param == "temperature"
    assert error_of(parse_chat, {**base, "max_tokens": 0}).param == "max_tokens"
    assert error_of(parse_chat, {**base, "stream_options": {"include_usage": True}}).param == (
        "stream_options"
    )
    streamed = parse_chat({**base, "stream": True, "stream_options": {"include_usage": True}})
    assert streamed.stream and streamed.include_usage
    assert error_of(parse_chat, {**base, "messages": []}).param == "messages"


def test_completions_default_to_sixteen_tokens_and_one_prompt() -> None:
    call = parse_completions({"model": "tiny-llm", "prompt": ["Hello"]})
    assert call.prompt == "Hello" and call.max_tokens == 16 and not call.chat
    assert error_of(parse_completions, {"model": "m", "prompt": ["a", "b"]}).param == "prompt"
    assert error_of(parse_completions, {"model": "m", "prompt": "a", "echo": True}).param == "echo"


def test_malformed_json_is_a_clear_400() -> None:
    for body in (b"{not json", b"[1, 2]", b"", b"NaN"):
        with pytest.raises(BadRequest) as caught:
            parse_json_body(body)
        assert caught.value.code == "invalid_json"


def test_chat_template_is_simple_and_refuses_tools_and_images() -> None:
    messages = [
        {"role": "developer", "content": "be brief"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "!"}],
        },
        {"role": "assistant", "content": "yo"},
    ]
    assert render_chat(messages) == (
        "<|system|>\nbe brief\n<|user|>\nhi !\n<|assistant|>\nyo\n<|assistant|>\n"
    )
    with pytest.raises(BadRequest, match="tool"):
        render_chat([{"role": "tool", "content": "x"}])
    with pytest.raises(BadRequest, match="text parts"):
        render_chat([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}])


# -- token counting ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["minilm", "tiny"])
def test_token_counts_match_the_models_own_tokenizers(spec: str, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    counter = load_counter(spec, tmp_path)
    folder = Path(counter.source).parent
    reference = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    texts = ["hello", "Ünïcode — ✓ and emoji 🙂", "a " * 300, "<|user|>\nhi\n<|assistant|>\n"]
    for text in texts:
        assert counter.count(text) == len(reference.encode(text, add_special_tokens=True))
    assert counter.count_many(texts) == [counter.count(t) for t in texts]


def test_a_missing_tokenizer_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(GatewayConfigError, match="tokenizer"):
        load_counter(str(tmp_path / "nothing.json"), tmp_path)


# -- answers and their offline check ----------------------------------------------------------


def miner_answer(payload: dict[str, Any], request: bytes, tokens: tuple[int, int]) -> Any:
    return make_receipt(
        MINER,
        request_hash=__import__("hashlib").sha256(request).hexdigest(),
        response_hash=json_hash(payload),
        model_id=payload["model"],
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
        price=sum(tokens) * 3,
        caller=GATEWAY.address,
        netuid=1,
        nonce="ab" * 16,
    )


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_embedding_answers_are_spliced_and_verify_offline(encoding: str) -> None:
    vectors = [[0.25, -1.5e-05, 0.1234567], [1.0, 0.0, -0.3333333432674408]]
    vectors = [[struct.unpack("<f", struct.pack("<f", x))[0] for x in v] for v in vectors]
    payload = {
        "embeddings": vectors,
        "model": "embed:minilm@00",
        "usage": {"completion_tokens": 0, "prompt_tokens": 5, "total_tokens": 5},
    }
    content = normalized_json(payload)
    rows = embedding_rows(content)
    assert rows is not None and len(rows) == 2
    request = {"model": "minilm", "input": ["a", "b"]}
    receipt = miner_answer(payload, embed_body(["a", "b"]), (5, 0))
    receipt_json = canonical_bytes(receipt.to_json())
    body = embeddings_response("minilm", rows, encoding, 5, receipt_json, receipt.price)
    answer = json.loads(body)
    assert answer["object"] == "list" and answer["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    if encoding == "base64":
        raw = base64.b64decode(answer["data"][1]["embedding"])
        assert list(struct.unpack("<3f", raw)) == vectors[1]
    else:
        assert answer["data"][0]["embedding"] == vectors[0]
    assert verify_response(request, body, gateway=GATEWAY.address) == receipt
    tampered = json.loads(body)
    tampered["data"][0]["embedding"] = [0.5, 0.5, 0.5] if encoding == "float" else "AAAA" * 4
    with pytest.raises(InvalidReceipt, match="response hash"):
        verify_response(request, json.dumps(tampered).encode())
    with pytest.raises(InvalidReceipt, match="request hash"):
        verify_response({"model": "minilm", "input": ["a", "c"]}, body)
    with pytest.raises(InvalidReceipt, match="wrong caller"):
        verify_response(request, body, gateway=MINER.address)
    overcharged = {**json.loads(body), "agora_charged": receipt.price + 1}
    with pytest.raises(InvalidReceipt, match="charge"):
        verify_response(request, overcharged)


def test_embedding_rows_refuse_what_is_not_a_list_of_numbers() -> None:
    assert embedding_rows(b'{"embeddings":[["x"]],"model":"m"}') is None
    assert embedding_rows(b'{"model":"m"}') is None
    assert embedding_rows(b'{"embeddings":[[1,2],[3]],"model":"m"}') == [b"1,2", b"3"]


def test_a_chat_answer_verifies_against_the_customers_request() -> None:
    request = {
        "model": "tiny-llm",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3,
        "temperature": 0,
    }
    sent = generate_body(render_chat(request["messages"]), 3, 0.0, None, False)
    payload = {
        "finish_reason": "length",
        "model": "generate:tiny@00",
        "seed": None,
        "text": "abc",
        "token_ids": [100, 101, 102],
        "usage": {"completion_tokens": 3, "prompt_tokens": 9, "total_tokens": 12},
        "toploc": "VExPQw==",  # the miner's activation proof rides along, covered by the hash
    }
    receipt = miner_answer(payload, sent, (9, 3))
    call = parse_chat(request)
    answer = generation_response(
        call,
        "id",
        "abc",
        "length",
        [100, 101, 102],
        None,
        receipt,
        receipt.price,
        sent,
        toploc="VExPQw==",
    )
    assert answer["choices"][0]["message"]["content"] == "abc"
    assert verify_response(request, answer) == receipt
    with pytest.raises(InvalidReceipt, match="prompt"):
        verify_response({**request, "messages": [{"role": "user", "content": "ho"}]}, answer)
    with pytest.raises(InvalidReceipt, match="response hash"):
        verify_response(request, {**answer, "agora_token_ids": [100, 101, 103]})
    with pytest.raises(InvalidReceipt, match="response hash"):
        verify_response(request, {**answer, "agora_toploc": None})


# -- routing ------------------------------------------------------------------------------------


def router_with(*miners: MinerInfo, exploration: float = 0.0) -> Router:
    config = GatewayConfig(exploration=exploration)
    router = Router(config, None, None, GATEWAY.address, rng=random.Random(7))  # type: ignore[arg-type]
    for miner in miners:
        router.miners.setdefault(miner.netuid, {})[miner.hotkey] = miner
    return router


def miner(uid: int, price: int = 1000, latency: float | None = None, **kw: Any) -> MinerInfo:
    info = MinerInfo(
        1,
        uid,
        f"{uid:064x}",
        "127.0.0.1",
        1000 + uid,
        healthy=True,
        model="embed:minilm@abc",
        price_per_1k=price,
        latency_ms=latency,
    )
    for name, value in kw.items():
        setattr(info, name, value)
    return info


def test_routing_prefers_cheap_fast_and_trusted_miners_but_explores() -> None:
    route = DEFAULT_MODELS[0]
    cheap, dear, slow = miner(1, 1000, 10.0), miner(2, 4000, 10.0), miner(3, 1000, 80.0)
    router = router_with(cheap, dear, slow)
    picks = [router.pick(route, set()).uid for _ in range(3000)]  # type: ignore[union-attr]
    share = {uid: picks.count(uid) / len(picks) for uid in (1, 2, 3)}
    assert share[1] > 0.6 and share[1] > 3 * share[2] and share[1] > 3 * share[3]
    assert share[2] > 0.05 and share[3] > 0.02  # proportional, not arg max
    trusted = miner(4, 1000, 10.0, incentive=0.9)
    router = router_with(miner(1, 1000, 10.0), trusted)
    picks = [router.pick(route, set()).uid for _ in range(2000)]  # type: ignore[union-attr]
    assert picks.count(4) > 0.65 * len(picks)  # (0.9 + 1/2) / (0 + 1/2): 74 %
    explorer = router_with(miner(1, 1, 1.0), miner(2, 10**9, 1e4), exploration=1.0)
    picks = [explorer.pick(route, set()).uid for _ in range(400)]  # type: ignore[union-attr]
    assert 120 < picks.count(2) < 280


def test_routing_skips_unhealthy_failing_excluded_and_wrong_model_miners() -> None:
    route = DEFAULT_MODELS[0]
    sick = miner(1, healthy=False)
    other_model = miner(2, model="embed:other@123")
    good = miner(3)
    router = router_with(sick, other_model, good)
    assert [m.uid for m in router.candidates(route)] == [3]
    assert router.pick(route, {good.hotkey}) is None
    router.failed(good, "timeout")
    router.failed(good, "timeout")
    assert good.failures == 2 and router.pick(route, set()) is None  # backing off 2 s
    good.down_until = 0.0
    router.succeeded(good, 0.02)
    assert good.failures == 0 and good.latency_ms == 20.0
    router.succeeded(good, 0.07)
    assert good.latency_ms == pytest.approx(30.0)
    assert router.max_price(route) == 1000


# -- the HTTP client ----------------------------------------------------------------------------


def upstream_app() -> Starlette:
    async def echo(request: Request) -> Response:
        body = await request.body()
        return Response(body, headers={"X-Echo": request.headers.get("x-test", "")})

    async def slow(request: Request) -> Response:
        await asyncio.sleep(2)
        return Response(b"late")

    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(5):
                yield f"event: token\ndata: {i}\n\n".encode()
                await asyncio.sleep(0.01)

        return StreamingResponse(chunks(), media_type="text/event-stream")

    async def refuse(request: Request) -> Response:
        return Response(b'{"error":{"code":"nope"}}', status_code=403)

    return Starlette(
        routes=[
            Route("/echo", echo, methods=["POST"]),
            Route("/slow", slow, methods=["POST"]),
            Route("/stream", stream, methods=["POST"]),
            Route("/refuse", refuse, methods=["POST"]),
        ]
    )


@pytest.mark.anyio
async def test_http_client_requests_streams_and_reuses_connections() -> None:
    pool = HttpPool()
    try:
        async with running_app(upstream_app()) as url:
            port = int(url.rsplit(":", 1)[1])
            for i in range(3):
                response = await pool.request(
                    "127.0.0.1", port, "POST", "/echo", [("X-Test", str(i))], b"x" * i, 5.0
                )
                assert (response.status, response.body) == (200, b"x" * i)
                assert response.headers["x-echo"] == str(i)
            assert len(pool._idle[("127.0.0.1", port)]) == 1  # one connection, reused
            refused = await pool.request("127.0.0.1", port, "POST", "/refuse", (), b"", 5.0)
            assert refused.status == 403 and b"nope" in refused.body
            stream = await pool.stream("127.0.0.1", port, "POST", "/stream", (), b"", 5.0)
            async with stream:
                data = b"".join([c async for c in stream.iter_chunks(5.0)])
            assert data.count(b"event: token") == 5
            with pytest.raises(UpstreamError) as late:
                await pool.request("127.0.0.1", port, "POST", "/slow", (), b"", 0.2)
            assert late.value.timeout
            again = await pool.request("127.0.0.1", port, "POST", "/echo", (), b"ok", 5.0)
            assert again.body == b"ok"
        with pytest.raises(UpstreamError) as refused_conn:
            await pool.request("127.0.0.1", free_port(), "POST", "/echo", (), b"", 2.0)
        assert not refused_conn.value.sent
    finally:
        await pool.aclose()


@pytest.mark.anyio
async def test_http_client_recovers_from_a_server_closing_idle_connections() -> None:
    pool = HttpPool()
    try:
        port = free_port()
        async with running_app(upstream_app(), port=port):
            await pool.request("127.0.0.1", port, "POST", "/echo", (), b"a", 5.0)
        async with running_app(upstream_app(), port=port):  # the pooled connection is dead
            response = await pool.request("127.0.0.1", port, "POST", "/echo", (), b"b", 5.0)
            assert response.body == b"b"
    finally:
        await pool.aclose()


# -- store and configuration --------------------------------------------------------------------


def test_usage_is_flushed_in_batches_and_survives_a_reopen(tmp_path: Path) -> None:
    store = GatewayStore(tmp_path / "g.sqlite")
    for i, miner_key in enumerate(["m1", "m1", "m2"]):
        store.add_usage(
            UsageRow(
                "key_a",
                1000 + i,
                f"r{i}",
                "minilm",
                1,
                miner_key,
                5,
                0,
                10 + i,
                10 + i,
                json.dumps({"n": i}),
            )
        )
    assert store.usage("key_a") == []  # queued until a flush
    store.close()
    store = GatewayStore(tmp_path / "g.sqlite")
    totals = store.usage_totals("key_a")
    assert totals["requests"] == 3 and totals["charged"] == 33
    assert [(m["miner"], m["requests"], m["price"]) for m in totals["by_miner"]] == [
        ("m1", 2, 21),
        ("m2", 1, 12),
    ]
    assert [r.request_id for r in store.usage("key_a", limit=2)] == ["r2", "r1"]
    assert store.charged_since(1001) == {"key_a": 23}
    store.close()


def test_config_files_override_defaults_and_refuse_mistakes(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(
        'miner_deposit = "0.5"\nredeem_interval_s = 2\n\n[models.e5]\nnetuid = 3\n'
        'task = "embed"\ntokenizer = "minilm"\ncontext_length = 512\n'
    )
    config = load_config(path, port=9000)
    assert config.miner_deposit == 500_000_000 and config.redeem_interval_s == 2
    assert config.port == 9000 and config.models == (ModelRoute("e5", 3, "embed", "minilm", 512),)
    path.write_text("colour = 3\n")
    with pytest.raises(GatewayConfigError, match="unknown setting"):
        load_config(path)
    path.write_text('[models.x]\nnetuid = 1\ntask = "dance"\ntokenizer = "t"\ncontext_length = 9\n')
    with pytest.raises(GatewayConfigError, match="task"):
        load_config(path)
    path.write_text("min_deposit = 0.1\n")
    assert load_config(path).min_deposit == 100_000_000
    with pytest.raises(GatewayConfigError, match="no config file"):
        load_config(tmp_path / "missing.toml")


def test_public_surface_and_the_devnet_command(tmp_path: Path) -> None:
    import agora.gateway as gateway
    from agora.gateway.devnet import gateway_command

    assert len(set(gateway.__all__)) == len(gateway.__all__)
    for name in gateway.__all__:
        assert getattr(gateway, name) is not None, name
    args = gateway_command("http://n:1", tmp_path, port=8123, serve={"minilm": 3})
    assert args[1:4] == ["-m", "agora.gateway", "start"]
    assert args[args.index("--serve") + 1] == "minilm=3" and "8123" in args
