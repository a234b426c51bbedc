"""Receipts: made by a guarded miner, carried by header, JSON field or final stream event, checked
offline; every altered field fails with a reason that says which check failed; and the CLI."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, StreamingResponse
from typer.testing import CliRunner

from agora.crypto.keys import Keypair
from agora.net import (
    RECEIPT_HEADER,
    REQUEST_DOMAIN,
    AgoraAuth,
    AgoraGuardMiddleware,
    GuardConfig,
    InvalidReceipt,
    Receipt,
    RequestGuard,
    SignedRequest,
    StaticStanding,
    body_hash,
    decode_receipt_header,
    embed_receipt,
    encode_receipt_header,
    extract_receipt,
    json_hash,
    make_receipt,
    read_receipt,
    receipt_event,
    split_embedded_receipt,
    split_stream,
    stream_with_receipt,
    verified_request,
    verify_receipt,
)
from agora.net.cli import app as cli_app

pytestmark = pytest.mark.anyio

MINER = Keypair.from_name("test/net/miner")
GATEWAY = Keypair.from_name("test/net/gateway")
OTHER = Keypair.from_name("test/net/other")
REQUEST = b'{"input":["hello","world"]}'
RESPONSE = b'{"data":[[0.1,-0.25]]}'
NONCE = "ab" * 16
PRICE = 1_500_000_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def receipt(**overrides: Any) -> Receipt:
    fields: dict[str, Any] = {
        "request_hash": body_hash(REQUEST),
        "response_hash": body_hash(RESPONSE),
        "model_id": "sentence-transformers/all-MiniLM-L6-v2",
        "prompt_tokens": 4,
        "completion_tokens": 0,
        "price": PRICE,
        "caller": GATEWAY.address,
        "netuid": 1,
        "nonce": NONCE,
        "timestamp_ms": 1_700_000_000_123,
    }
    fields.update(overrides)
    return make_receipt(MINER, **fields)


# --- round trips -----------------------------------------------------------------------------


def test_round_trip() -> None:
    made = receipt()
    assert made.miner == MINER.address and made.version == 1
    verify_receipt(made, REQUEST, RESPONSE)
    verify_receipt(made.to_json(), REQUEST, RESPONSE, miner=MINER.address)
    assert Receipt.from_json(json.loads(json.dumps(made.to_json()))) == made
    assert decode_receipt_header(encode_receipt_header(made)) == made
    assert "=" not in encode_receipt_header(made)


def test_receipt_vector() -> None:
    """The vector in docs/wire.md."""
    made = make_receipt(
        Keypair.from_name("miner"),
        request_hash=body_hash(b'{"input":["hello"]}'),
        response_hash=body_hash(b'{"data":[[0.5]]}'),
        model_id="sentence-transformers/all-MiniLM-L6-v2",
        prompt_tokens=3,
        completion_tokens=0,
        price=2500,
        caller=Keypair.from_name("alice").address,
        netuid=1,
        nonce="00112233445566778899aabbccddeeff",
        timestamp_ms=1_700_000_000_250,
    )
    assert made.signature == (
        "655433cb9ce34ad855906b55f3e52ba613aef687561d2cb62f6177a7794b80b2"
        "fb51a11ce7438f192339d9ecb55334042ccb5d374c1b36e098db0124fbd02608"
    )


def test_json_field_round_trip_survives_reserialization() -> None:
    payload = {"data": [[0.1, -0.25, 1e-07]], "model": "m"}
    made = receipt(response_hash=json_hash(payload))
    body = embed_receipt(payload, made)
    pretty = json.dumps(body, indent=2, sort_keys=False).encode()  # as a gateway might
    verify_receipt(made, REQUEST, pretty)
    assert split_embedded_receipt(json.loads(pretty)) == (payload, made)


def test_stream_round_trip() -> None:
    content = b"data: one\n\ndata: two\n\n"
    made = receipt(response_hash=body_hash(content))
    stream = content + receipt_event(made)
    assert split_stream(stream) == (content, made)
    verify_receipt(made, REQUEST, stream)
    verify_receipt(made, REQUEST, content)


def test_make_receipt_refuses_malformed_fields() -> None:
    with pytest.raises(InvalidReceipt, match="price"):
        receipt(price=-1)
    with pytest.raises(InvalidReceipt, match="nonce"):
        receipt(nonce="short")


# --- every tampered field fails --------------------------------------------------------------

ALTERED = {
    "version": 2,
    "request_hash": body_hash(b"other request"),
    "response_hash": body_hash(b"other response"),
    "model_id": "a-bigger-model",
    "prompt_tokens": 5,
    "completion_tokens": 1,
    "price": PRICE + 1,
    "timestamp": 1_700_000_000_124,
    "caller": OTHER.address,
    "miner": OTHER.address,
    "netuid": 2,
    "nonce": "cd" * 16,
    "signature": "00" * 64,
}


@pytest.mark.parametrize("field", sorted(ALTERED))
def test_every_altered_field_fails(field: str) -> None:
    assert set(ALTERED) == set(Receipt.__dataclass_fields__)
    document = {**receipt().to_json(), field: ALTERED[field]}
    with pytest.raises(InvalidReceipt) as error:
        verify_receipt(document)
    expected = "unsupported version" if field == "version" else "bad signature"
    assert error.value.reason.startswith(expected), error.value.reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"price": "1500000000"}, "malformed: price must be an integer"),
        ({"price": 1.5}, "malformed: price must be an integer"),
        ({"prompt_tokens": True}, "malformed: prompt_tokens must be an integer"),
        ({"netuid": -1}, "malformed: netuid must be an integer"),
        ({"completion_tokens": 2**64}, "malformed: completion_tokens must be an integer"),
        ({"caller": "AB" * 32}, "malformed: caller must be 64 lowercase hex"),
        ({"signature": ""}, "malformed: signature must be 128 lowercase hex"),
        ({"model_id": ""}, "malformed: model_id must be a string"),
        ({"model_id": None}, "malformed: model_id must be a string"),
        ({"extra": 1}, "malformed: unknown field(s) extra"),
    ],
)
def test_malformed_fields_are_named(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidReceipt) as error:
        verify_receipt({**receipt().to_json(), **change})
    assert error.value.reason.startswith(reason), error.value.reason


def test_missing_field_is_named() -> None:
    document = receipt().to_json()
    del document["nonce"]
    with pytest.raises(InvalidReceipt, match=r"missing field\(s\) nonce"):
        verify_receipt(document)


def test_not_an_object() -> None:
    with pytest.raises(InvalidReceipt, match="malformed: a receipt is a JSON object"):
        verify_receipt([1, 2])  # type: ignore[arg-type]


def test_wrong_request_or_response_body() -> None:
    made = receipt()
    with pytest.raises(InvalidReceipt, match=r"^request hash mismatch"):
        verify_receipt(made, REQUEST + b" ", RESPONSE)
    with pytest.raises(InvalidReceipt, match=r"^response hash mismatch"):
        verify_receipt(made, REQUEST, RESPONSE.replace(b"0.1", b"0.2"))


def test_wrong_miner() -> None:
    with pytest.raises(InvalidReceipt, match=r"^wrong miner"):
        verify_receipt(receipt(), miner=OTHER.address)


def test_receipt_signed_under_another_domain_fails() -> None:
    made = receipt()
    forged = {
        **made.to_json(),
        "signature": MINER.sign_message(REQUEST_DOMAIN, made.signed_fields()),
    }
    with pytest.raises(InvalidReceipt, match=r"^bad signature"):
        verify_receipt(forged)


def test_receipt_re_signed_by_someone_else_fails_against_the_miner() -> None:
    """Anyone can sign a receipt naming themselves; only ``miner=`` (or the metagraph) says
    whether the signer is the miner that was called."""
    theirs = make_receipt(
        OTHER,
        request_hash=body_hash(REQUEST),
        response_hash=body_hash(RESPONSE),
        model_id="m",
        prompt_tokens=1,
        completion_tokens=0,
        price=0,
        caller=GATEWAY.address,
        netuid=1,
        nonce=NONCE,
    )
    verify_receipt(theirs)
    with pytest.raises(InvalidReceipt, match=r"^wrong miner"):
        verify_receipt(theirs, miner=MINER.address)


@pytest.mark.parametrize(
    "text",
    [b"", b"not base64 at all!", base64.urlsafe_b64encode(b"[1]"), b"{broken json"],
)
def test_unreadable_receipts(text: bytes) -> None:
    with pytest.raises(InvalidReceipt, match=r"^malformed"):
        read_receipt(text)


@pytest.mark.parametrize(
    "tail",
    [
        b"event: agora-receipt\ndata: {}\n\n",
        b"event: agora-receipt\ndata: nope\n\n",
        b"event: agora-receipt\ndata: {}\n",
        b"event: agora-receipt\ndata: {}\n\ndata: more\n\n",
    ],
)
def test_malformed_stream_tails(tail: bytes) -> None:
    with pytest.raises(InvalidReceipt):
        split_stream(b"data: x\n\n" + tail)


def test_stream_without_receipt() -> None:
    with pytest.raises(InvalidReceipt, match=r"^no receipt"):
        split_stream(b"data: x\n\n")


# --- a guarded miner that issues receipts ----------------------------------------------------


def miner_app() -> FastAPI:
    app = FastAPI()
    model = "sentence-transformers/all-MiniLM-L6-v2"

    def sign(signed: SignedRequest, response_hash: str, tokens: int) -> Receipt:
        return make_receipt(
            MINER,
            request_hash=signed.body_sha256,
            response_hash=response_hash,
            model_id=model,
            prompt_tokens=tokens,
            completion_tokens=0,
            price=tokens * 1000,
            caller=signed.caller,
            netuid=1,
            nonce=signed.nonce,
        )

    @app.post("/v1/embeddings")
    async def embeddings(
        signed: Annotated[SignedRequest, Depends(verified_request)],
    ) -> JSONResponse:
        payload = {"data": [[0.1, -0.2, 3.5e-08]], "model": model}
        made = sign(signed, json_hash(payload), 2)
        return JSONResponse(
            embed_receipt(payload, made),
            headers={RECEIPT_HEADER: encode_receipt_header(made)},
        )

    @app.post("/v1/stream")
    async def stream(
        signed: Annotated[SignedRequest, Depends(verified_request)],
    ) -> StreamingResponse:
        async def tokens() -> AsyncIterator[bytes]:
            for word in ("Hello", ",", " world"):
                yield f"data: {json.dumps({'text': word})}\n\n".encode()

        return StreamingResponse(
            stream_with_receipt(tokens(), lambda digest: sign(signed, digest, 3)),
            media_type="text/event-stream",
        )

    guard = RequestGuard(
        GuardConfig(hotkey=MINER.address), StaticStanding({GATEWAY.address: 10**9})
    )
    app.add_middleware(AgoraGuardMiddleware, guard=guard)
    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=miner_app())
    auth = AgoraAuth(GATEWAY, MINER.address)
    async with httpx.AsyncClient(transport=transport, base_url="http://miner", auth=auth) as c:
        yield c


async def test_json_response_carries_a_receipt_for_this_request(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/embeddings", json={"input": ["hi"]})
    assert response.status_code == 200, response.text
    sent = response.request
    from_header = extract_receipt(response.headers)
    from_body = extract_receipt(body=response.content)
    assert from_header == from_body
    assert from_header.nonce == sent.headers["X-Agora-Nonce"]
    assert from_header.caller == GATEWAY.address
    verify_receipt(from_header, sent.content, response.content, miner=MINER.address)


async def test_stream_ends_with_a_receipt_for_its_content(client: httpx.AsyncClient) -> None:
    async with client.stream("POST", "/v1/stream", json={"prompt": "hi"}) as response:
        data = b"".join([chunk async for chunk in response.aiter_raw()])
    content, made = split_stream(data)
    assert content.count(b"data:") == 3
    verify_receipt(made, response.request.content, data, miner=MINER.address)
    verify_receipt(made, response.request.content, content)
    with pytest.raises(InvalidReceipt, match=r"^response hash mismatch"):
        verify_receipt(made, None, content.replace(b"world", b"WORLD"))


# --- the CLI ---------------------------------------------------------------------------------


def run(*args: str | Path) -> Any:
    return CliRunner().invoke(cli_app, [str(a) for a in args])


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    made = receipt()
    paths = {
        "receipt": tmp_path / "receipt.json",
        "request": tmp_path / "request.json",
        "response": tmp_path / "response.json",
        "header": tmp_path / "receipt.b64",
    }
    paths["receipt"].write_text(json.dumps(made.to_json(), indent=2))
    paths["request"].write_bytes(REQUEST)
    paths["response"].write_bytes(RESPONSE)
    paths["header"].write_text(encode_receipt_header(made) + "\n")
    return paths


def test_cli_valid(files: dict[str, Path]) -> None:
    result = run(
        "verify", files["receipt"], "--request", files["request"], "--response", files["response"]
    )
    assert result.exit_code == 0, result.output
    assert "VALID" in result.output and "INVALID" not in result.output
    assert MINER.address in result.output
    assert "1.5 token (1500000000 units)" in result.output
    assert "matches" in result.output


def test_cli_valid_header_value_without_bodies(files: dict[str, Path]) -> None:
    result = run("verify", files["header"], "--miner", MINER.address)
    assert result.exit_code == 0, result.output
    assert "not checked" in result.output


def test_cli_tampered_file(files: dict[str, Path]) -> None:
    document = json.loads(files["receipt"].read_text())
    document["price"] = 1
    files["receipt"].write_text(json.dumps(document))
    result = run("verify", files["receipt"])
    assert result.exit_code == 1
    assert "INVALID" in result.output and "bad signature" in result.output


def test_cli_wrong_response(files: dict[str, Path]) -> None:
    files["response"].write_bytes(b'{"data":[[9]]}')
    result = run("verify", files["receipt"], "--response", files["response"])
    assert result.exit_code == 1
    assert "response hash mismatch" in result.output


def test_cli_malformed_file(files: dict[str, Path]) -> None:
    files["receipt"].write_text('{"version": 1}')
    result = run("verify", files["receipt"])
    assert result.exit_code == 1
    assert "malformed: missing field(s)" in result.output


def test_cli_whole_response_file_checks_its_content(tmp_path: Path) -> None:
    payload = {"data": [[0.5]]}
    made = receipt(response_hash=json_hash(payload))
    whole = tmp_path / "response.json"
    whole.write_text(json.dumps(embed_receipt(payload, made)))
    assert run("verify", whole).exit_code == 0
    whole.write_text(json.dumps(embed_receipt({"data": [[0.6]]}, made)))
    result = run("verify", whole)
    assert result.exit_code == 1 and "response hash mismatch" in result.output


def test_cli_help_has_an_example() -> None:
    result = run("verify", "--help")
    assert result.exit_code == 0
    assert "agora receipt verify receipt.json --request" in result.output


def test_cli_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    assert run("verify", tmp_path / "nope.json").exit_code == 2
