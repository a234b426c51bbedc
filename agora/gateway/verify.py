"""Checking a gateway's answer offline: what was served, by whom, for what price.

    receipt = verify_response(request_json, response_bytes, gateway=GATEWAY_ADDRESS)

``request_json`` is what the customer sent (the OpenAI request), ``response_bytes`` the whole
answer as received: a JSON body, or a whole event stream. The check rebuilds, from the customer's
request and the answer, the exact request the gateway sent the miner and the exact answer the
miner signed, and verifies the miner's receipt against both:

- the signature is the miner's (``receipt.miner``; that this hotkey is a miner of the subnet is
  for the metagraph to say: ``agora subnet metagraph``);
- ``request_hash``: embeddings: ``{"texts": [...]}`` of the customer's input; generations: the
  ``agora_request`` the answer carries, whose prompt and parameters must be the customer's (the
  prompt of a chat request rendered with the documented ``simple`` template);
- ``response_hash``: embeddings: the vectors (floats, or base64 float32), the model id and the
  token counts; generations: text, token ids, finish reason, seed and counts (a stream: every
  token event, in order);
- ``caller`` is the gateway (when its address is given), and the charge (``agora_charged``) is
  the receipt's price (plus the gateway's published markup, if any: pass ``markup_bps``).

Raises :class:`agora.net.errors.InvalidReceipt` with the reason for the first check that fails.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from typing import Any

from agora.gateway.forward import embed_body
from agora.gateway.tokens import render_chat
from agora.net.errors import InvalidReceipt
from agora.net.receipts import Receipt, json_hash, verify_receipt

__all__ = ["verify_response"]


def _usage(receipt: Receipt) -> dict[str, int]:
    p, c = receipt.prompt_tokens, receipt.completion_tokens
    return {"completion_tokens": c, "prompt_tokens": p, "total_tokens": p + c}


def _vector(embedding: Any) -> list[float]:
    if isinstance(embedding, str):
        raw = base64.b64decode(embedding)
        return [float(x) for x in struct.unpack(f"<{len(raw) // 4}f", raw)]
    return [float(x) for x in embedding]


def _check_charge(answer: dict[str, Any], receipt: Receipt, markup_bps: int) -> None:
    charged = answer.get("agora_charged")
    expected = receipt.price + -(-receipt.price * markup_bps // 10_000)
    if charged is not None and charged != expected:
        raise InvalidReceipt(
            f"charge mismatch: charged {charged} units, the receipt's price is {receipt.price}"
        )


def _check_generation_request(request: dict[str, Any], sent: dict[str, Any]) -> None:
    prompt: Any
    if "messages" in request:
        prompt = render_chat(request["messages"])
    else:
        prompt = request.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
    if sent.get("prompt") != prompt:
        raise InvalidReceipt("request mismatch: the miner was sent another prompt")
    wanted = request.get("max_completion_tokens") or request.get("max_tokens")
    if wanted is not None and sent.get("max_tokens") != wanted:
        raise InvalidReceipt("request mismatch: the miner was sent another max_tokens")
    temperature = request.get("temperature")
    if temperature is not None and sent.get("temperature") != float(temperature):
        raise InvalidReceipt("request mismatch: the miner was sent another temperature")
    greedy = sent.get("temperature") == 0.0 and sent.get("seed") is None
    if request.get("seed") is not None and sent.get("seed") != request["seed"] and not greedy:
        raise InvalidReceipt("request mismatch: the miner was sent another seed")


def _stream_answer(data: bytes) -> dict[str, Any]:
    chunks = []
    for block in data.split(b"\n\n"):
        line = block.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if "error" in chunk:
            raise InvalidReceipt(f"the stream ended with an error: {chunk['error']}")
        chunks.append(chunk)
    events: list[tuple[str, list[int]]] = []
    final: dict[str, Any] | None = None
    for chunk in chunks:
        if "agora_receipt" in chunk:
            final = chunk
        elif "agora_token_ids" in chunk:
            choice = chunk["choices"][0]
            text = choice.get("text") if "text" in choice else choice["delta"].get("content", "")
            events.append((text or "", chunk["agora_token_ids"]))
    if final is None:
        raise InvalidReceipt("no receipt: the stream has no chunk with agora_receipt")
    return {"events": events, "final": final}


def verify_response(
    request: dict[str, Any],
    response: bytes | dict[str, Any],
    *,
    gateway: str | None = None,
    markup_bps: int = 0,
) -> Receipt:
    """Check a gateway answer against the customer's request (see the module docstring).
    Returns the receipt.

    Raises:
        InvalidReceipt: the first check that fails, with the reason.
    """
    if isinstance(response, bytes) and response.lstrip().startswith(b"data: "):
        stream = _stream_answer(response)
        final = stream["final"]
        receipt = Receipt.from_json(final["agora_receipt"])
        sent = json.loads(final["agora_request"])
        _check_generation_request(request, sent)
        finish = final["choices"][0]["finish_reason"]
        content = bytearray()
        events = stream["events"]
        for index, (text, ids) in enumerate(events):
            token = {
                "finish_reason": finish if index == len(events) - 1 else None,
                "seed": final.get("agora_seed"),
                "text": text,
                "token_ids": ids,
                "toploc": final.get("agora_toploc") if index == len(events) - 1 else None,
            }
            content += b"event: token\ndata: " + _normalized(token) + b"\n\n"
        verify_receipt(receipt, final["agora_request"].encode())
        if hashlib.sha256(bytes(content)).hexdigest() != receipt.response_hash:
            raise InvalidReceipt(
                "response hash mismatch: the streamed tokens are not the ones signed"
            )
        _check_caller(receipt, gateway)
        _check_charge(final, receipt, markup_bps)
        return receipt
    answer = response if isinstance(response, dict) else json.loads(response)
    receipt = Receipt.from_json(answer.get("agora_receipt"))
    payload: dict[str, Any]
    if answer.get("object") == "list":  # embeddings
        texts = request["input"] if isinstance(request["input"], list) else [request["input"]]
        vectors = [_vector(item["embedding"]) for item in answer["data"]]
        payload = {
            "embeddings": vectors,
            "model": receipt.model_id,
            "usage": _usage(receipt),
        }
        verify_receipt(receipt, embed_body(texts))
    else:
        sent = json.loads(answer["agora_request"])
        _check_generation_request(request, sent)
        choice = answer["choices"][0]
        text = choice["message"]["content"] if "message" in choice else choice["text"]
        payload = {
            "finish_reason": choice["finish_reason"],
            "model": receipt.model_id,
            "seed": answer.get("agora_seed"),
            "text": text,
            "token_ids": answer["agora_token_ids"],
            "usage": _usage(receipt),
            "toploc": answer.get("agora_toploc"),
        }
        verify_receipt(receipt, answer["agora_request"].encode())
    if json_hash(payload) != receipt.response_hash:
        raise InvalidReceipt("response hash mismatch: this answer is not the one the miner signed")
    _check_caller(receipt, gateway)
    _check_charge(answer, receipt, markup_bps)
    return receipt


def _normalized(value: dict[str, Any]) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def _check_caller(receipt: Receipt, gateway: str | None) -> None:
    if gateway is not None and receipt.caller != gateway:
        raise InvalidReceipt(f"wrong caller: issued to {receipt.caller}, not the gateway {gateway}")
