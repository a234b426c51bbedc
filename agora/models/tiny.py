"""A tiny Llama-style language model, built locally and identically on every machine.

Tests and the local network need a generator that loads in milliseconds and needs no download.
`ensure_tiny_model(data_dir)` writes one under ``<data_dir>/models/tiny`` (2 layers, hidden 64,
4 heads, a 259-token byte-level vocabulary, 512 positions, ~120k parameters, 0.5 MB) and then
it loads like any other local Hugging Face model (``generate:tiny`` or
``generate:<data_dir>/models/tiny``).

Every byte is a function of the variant's seed alone:

- the weights come from numpy's ``RandomState`` (whose stream numpy keeps frozen across
  versions) in a fixed order, and are written with safetensors (sorted, no timestamps);
- ``config.json`` and ``tokenizer_config.json`` are literal dicts written with sorted keys;
- the tokenizer is a byte-level BPE without merges, built with the ``tokenizers`` library:
  ``<pad>`` = 0, ``<s>`` = 1 (prepended to every input), ``</s>`` = 2, byte ``b`` = 3 + b.

The model is untrained: its text is gibberish, but it is a real causal LM with peaked, seed-
determined next-token distributions, which is all that determinism, batching, streaming and
scoring tests need. ``tiny-bad`` is the same architecture with another seed: what an
adversarial miner serving "almost the right model" would run.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agora.models.errors import InvalidSpec, ModelError
from agora.models.naming import model_hash

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>")
BYTE_OFFSET = len(SPECIAL_TOKENS)


@dataclass(frozen=True, slots=True)
class TinyConfig:
    seed: int
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    intermediate: int = 128
    context: int = 512
    #: std of the output projection: large enough that next-token distributions are peaked
    head_std: float = 0.4

    @property
    def vocab(self) -> int:
        return BYTE_OFFSET + 256


VARIANTS: dict[str, TinyConfig] = {
    "tiny": TinyConfig(seed=0),
    "tiny-bad": TinyConfig(seed=1),
    # the first layer, embeddings and tokenizer of "tiny", and only one layer: a cheaper model
    # of the same family, what a miner saving compute would serve
    "tiny-small": TinyConfig(seed=0, layers=1),
    # a larger model built the same way, so that verification thresholds are not calibrated
    # on one toy alone (agora.verify, docs/verification.md)
    "tiny-wide": TinyConfig(seed=7, hidden=256, layers=4, intermediate=512),
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from bytes to printable characters (what the ByteLevel pre-tokenizer uses)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for b, char in sorted(_bytes_to_unicode().items()):
        vocab[char] = BYTE_OFFSET + b
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)]
    )
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return tokenizer.to_str(pretty=True)


def _config(cfg: TinyConfig) -> dict[str, object]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab,
        "hidden_size": cfg.hidden,
        "intermediate_size": cfg.intermediate,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "num_key_value_heads": cfg.heads,
        "head_dim": cfg.hidden // cfg.heads,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.context,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "use_cache": True,
    }


def _tokenizer_config(cfg: TinyConfig) -> dict[str, object]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "pad_token": "<pad>",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "model_max_length": cfg.context,
        "clean_up_tokenization_spaces": False,
    }


def tiny_weights(cfg: TinyConfig) -> dict[str, np.ndarray]:
    """The variant's weights, by Llama parameter name, drawn in this exact order."""
    h, f, v = cfg.hidden, cfg.intermediate, cfg.vocab
    shapes: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (v, h))]
    for i in range(cfg.layers):
        p = f"model.layers.{i}."
        shapes += [
            (p + "self_attn.q_proj.weight", (h, h)),
            (p + "self_attn.k_proj.weight", (h, h)),
            (p + "self_attn.v_proj.weight", (h, h)),
            (p + "self_attn.o_proj.weight", (h, h)),
            (p + "mlp.gate_proj.weight", (f, h)),
            (p + "mlp.up_proj.weight", (f, h)),
            (p + "mlp.down_proj.weight", (h, f)),
            (p + "input_layernorm.weight", (h,)),
            (p + "post_attention_layernorm.weight", (h,)),
        ]
    shapes += [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]
    rng = np.random.RandomState(cfg.seed)
    weights: dict[str, np.ndarray] = {}
    for name, shape in shapes:
        if name.endswith("norm.weight"):
            array = np.ones(shape)
        elif name == "model.embed_tokens.weight":
            array = rng.standard_normal(shape)
        elif name == "lm_head.weight":
            array = rng.standard_normal(shape) * cfg.head_std
        else:
            array = rng.standard_normal(shape) / np.sqrt(shape[1])
        weights[name] = np.ascontiguousarray(array, dtype=np.float32)
    return weights


def build_tiny_model(directory: Path, variant: str = "tiny") -> Path:
    """Write the variant's files into ``directory`` (created; must not hold other files)."""
    from safetensors.numpy import save_file

    cfg = _variant(variant)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tiny_weights(cfg), str(directory / "model.safetensors"), metadata={"format": "pt"})
    for name, data in (
        ("config.json", _config(cfg)),
        ("tokenizer_config.json", _tokenizer_config(cfg)),
    ):
        (directory / name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    (directory / "tokenizer.json").write_text(_tokenizer_json())
    return directory


def ensure_tiny_model(data_dir: Path | str, variant: str = "tiny") -> Path:
    """The directory of the tiny model under ``<data_dir>/models/<variant>``, built if needed.

    Idempotent and safe for several processes at once: the model is built in a temporary
    folder (about 50 ms) and hashed; an existing folder with the same hash is reused as is, one
    with another hash (altered or half-written) is replaced atomically.

    Raises `InvalidSpec` for an unknown variant, `ModelError` if the folder cannot be made right.
    """
    _variant(variant)
    models_dir = Path(data_dir) / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / variant
    tmp = models_dir / f".{variant}.tmp-{secrets.token_hex(4)}"
    try:
        build_tiny_model(tmp, variant)
        expected = model_hash(tmp)
        if _hash_or_none(target) == expected:
            return target
        if target.exists():
            stale = models_dir / f".{variant}.old-{secrets.token_hex(4)}"
            os.replace(target, stale)
            shutil.rmtree(stale, ignore_errors=True)
        # Fails if another process put its (identical) build there first; checked below.
        with contextlib.suppress(OSError):
            os.replace(tmp, target)
        if _hash_or_none(target) != expected:
            raise ModelError(f"could not write the {variant} model to {target}")
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _hash_or_none(path: Path) -> str | None:
    try:
        return model_hash(path) if path.is_dir() else None
    except (ModelError, OSError):
        return None


def _variant(variant: str) -> TinyConfig:
    try:
        return VARIANTS[variant]
    except KeyError:
        raise InvalidSpec(
            f"unknown tiny model {variant!r}; choose one of {', '.join(VARIANTS)}"
        ) from None


# -- the same model as a GGUF file, for llama.cpp ----------------------------------------------

_GGUF_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def _rope_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """Hugging Face's rotary layout to llama.cpp's (what llama.cpp's convert_hf_to_gguf does)."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def write_tiny_gguf(path: Path, variant: str = "tiny") -> Path:
    """Write the variant as a float32 GGUF file (architecture ``llama``, a ``gpt2`` byte-level
    vocabulary with the same ids). Needs the ``gguf`` package (pip install gguf).

    Raises `EngineUnavailable` if ``gguf`` is missing.
    """
    try:
        import gguf
    except ImportError as exc:
        from agora.models.errors import EngineUnavailable

        raise EngineUnavailable("writing GGUF files needs: pip install gguf") from exc
    cfg = _variant(variant)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(f"agora-{variant}")
    writer.add_context_length(cfg.context)
    writer.add_embedding_length(cfg.hidden)
    writer.add_block_count(cfg.layers)
    writer.add_feed_forward_length(cfg.intermediate)
    writer.add_head_count(cfg.heads)
    writer.add_head_count_kv(cfg.heads)
    writer.add_rope_dimension_count(cfg.hidden // cfg.heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(cfg.vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    chars = _bytes_to_unicode()
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([*SPECIAL_TOKENS, *(chars[b] for b in range(256))])
    writer.add_token_types([gguf.TokenType.CONTROL] * BYTE_OFFSET + [gguf.TokenType.NORMAL] * 256)
    # llama.cpp requires a merges list; this one merge makes a token that is not in the
    # vocabulary, so llama.cpp falls back to the two byte tokens: one token per byte, as here.
    writer.add_token_merges([f"{chars[0]} {chars[1]}"])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    fixed = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    for name, weight in tiny_weights(cfg).items():
        if name in fixed:
            writer.add_tensor(fixed[name], weight)
            continue
        _, _, layer, *rest = name.split(".")
        part = ".".join(rest[:-1])
        if part in ("self_attn.q_proj", "self_attn.k_proj"):
            weight = np.ascontiguousarray(_rope_permute(weight, cfg.heads))
        writer.add_tensor(f"blk.{layer}.{_GGUF_NAMES[part]}.weight", weight)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def ensure_tiny_gguf(data_dir: Path | str, variant: str = "tiny") -> Path:
    """``<data_dir>/models/<variant>.gguf``, written if missing or different (atomically)."""
    _variant(variant)
    models_dir = Path(data_dir) / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / f"{variant}.gguf"
    tmp = models_dir / f".{variant}.gguf.tmp-{secrets.token_hex(4)}"
    try:
        write_tiny_gguf(tmp, variant)
        if not (target.is_file() and model_hash(target) == model_hash(tmp)):
            os.replace(tmp, target)
        return target
    finally:
        tmp.unlink(missing_ok=True)
