"""Last hidden states, on both sides of a TOPLOC proof (torch).

The miner side is in `agora.models.decoder`: the causal LM engine's decoding loop hands each
row's `agora.verify.toploc.ProofBuilder` the last hidden states of every forward pass (the
prefill, then one position per decoding step), copied to the host 32 steps at a time, and gets
one proof per row when it ends: a top-k plus a polynomial interpolation per 32 positions.

The validator side is `prefill_hidden`: one forward pass over prompt plus output, whose last
hidden states cover every position the miner's proof covers.

`generate_without_cache` is an honest miner's other code path (a full forward pass per token,
no KV cache). Engines never use it; tests and the benchmark do, to check that a proof made that
way verifies too.

"Last hidden state" is ``outputs.hidden_states[-1]`` of a Hugging Face model called with
``output_hidden_states=True``: for Llama-style models the output of the final norm, i.e. exactly
what the language-model head sees.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np

from agora.verify.toploc import DEFAULT_CHUNK, DEFAULT_PER_POSITION, ProofBuilder


def last_hidden(outputs: Any) -> Any:
    """The last hidden state tensor ``[rows, positions, hidden]`` of a model call's outputs."""
    hidden_states = getattr(outputs, "hidden_states", None)
    if not hidden_states:
        raise ValueError("the model call did not return hidden states (output_hidden_states)")
    return hidden_states[-1]


def _final_hidden(model: Any, **inputs: Any) -> Any:
    """The last hidden state ``[rows, positions, H]`` of a forward pass, computed without the
    language-model head when the model exposes its decoder stack (``base_model``, as every
    Hugging Face causal LM does): a validator needs no logits, and skipping them and the other
    layers' saved states makes its pass about 10% cheaper. The decoder's ``last_hidden_state``
    is the same tensor as the full model's ``hidden_states[-1]`` (the final norm's output)."""
    base = getattr(model, "base_model", None)
    if base is not None and base is not model:
        outputs = base(**inputs, use_cache=False)
        hidden = getattr(outputs, "last_hidden_state", None)
        if hidden is not None:
            return hidden
    return last_hidden(model(**inputs, output_hidden_states=True, use_cache=False))


def prefill_hidden(model: Any, token_ids: Sequence[int], device: str = "cpu") -> np.ndarray:
    """The last hidden states ``[len(token_ids), H]`` (float32 numpy) of one forward pass."""
    import torch

    with torch.inference_mode():
        hidden = _final_hidden(
            model, input_ids=torch.tensor([list(token_ids)], dtype=torch.long, device=device)
        )
    return np.asarray(hidden[0].float().cpu().numpy(), dtype=np.float32)


def prefill_hidden_batch(
    model: Any, sequences: Sequence[Sequence[int]], device: str = "cpu", pad_id: int = 0
) -> list[np.ndarray]:
    """`prefill_hidden` of several sequences in one forward pass: ``[len(seq), H]`` each.

    A validator audits many answers; for small models the fixed cost of a model call is most of
    a prefill, so one padded call over several answers costs far less than one call each. The
    rows are padded on the right and the attention mask hides the padding: in a causal model a
    real position attends only to earlier positions, which are all real, and its position id is
    its index as in the unpadded call, so each row's hidden states are those of its own pass up
    to floating-point noise (about 1e-6 relative, far below the bf16 last place the proofs
    compare; `tests/test_toploc.py` checks that batched and single verdicts agree)."""
    import torch

    if not sequences:
        return []
    if len(sequences) == 1:
        return [prefill_hidden(model, sequences[0], device)]
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = 1
    with torch.inference_mode():
        hidden = _final_hidden(model, input_ids=ids.to(device), attention_mask=mask.to(device))
    block = hidden.float().cpu().numpy()
    return [
        np.asarray(block[row, : len(seq)], dtype=np.float32) for row, seq in enumerate(sequences)
    ]


def generate_without_cache(
    model: Any,
    prompt_ids: Sequence[int],
    max_tokens: int,
    eos_token_ids: frozenset[int],
    per_position: int = DEFAULT_PER_POSITION,
    chunk_size: int = DEFAULT_CHUNK,
) -> tuple[list[int], str]:
    """Greedy decoding with a full forward pass per token (no KV cache): tokens and proof.

    The proof is built from the last position of each full pass, so it reflects this code
    path's own floating-point results, not the KV-cached ones.
    """
    import torch

    ids = list(prompt_ids)
    builder = ProofBuilder(per_position, chunk_size)
    tokens: list[int] = []
    with torch.inference_mode():
        for step in range(max_tokens):
            outputs = model(
                input_ids=torch.tensor([ids], dtype=torch.long),
                output_hidden_states=True,
                use_cache=False,
            )
            hidden = last_hidden(outputs)[0].float().numpy()
            if step == 0:
                builder.add_prefill(hidden)
            else:
                builder.add_step(hidden[-1])
            token = int(torch.argmax(outputs.logits[0, -1].float()))
            tokens.append(token)
            ids.append(token)
            if token in eos_token_ids:
                break
    return tokens, base64.b64encode(builder.finish(len(tokens))).decode("ascii")
