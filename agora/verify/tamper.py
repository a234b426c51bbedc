"""Adversarial variants of a model: what a cheating miner would serve instead of the real one.

FOR TESTS, BENCHMARKS AND THE LOCAL DEMO ONLY. Every variant changes the weights in place and
keeps the engine's claimed ``model_id``, so only the answers (and their activation proofs) can
give it away:

    perturb-1, perturb-5   every weight matrix times (1 + r * N(0, 1)), r = 1% or 5%, drawn
                           from a generator seeded per parameter (the same noise every time)
    int8                   weight-only symmetric quantisation to 8 bits with one scale per
                           output row, then back to float (what a cheap int8 kernel computes)
    int4                   weight-only symmetric quantisation to 4 bits (-8..7) with one scale
                           per group of 32 inputs (per row if the row is not a multiple of 32)
    bf16                   the whole model in bfloat16: NOT a cheat, an honest miner on
                           hardware that prefers it; proofs must still verify

Only matrices (embeddings, projections, the output head) are touched; norms and biases are
left alone, as weight-only quantisation does.

Use `tamper_engine(engine, kind)` on a loaded engine, or
``await load_tampered_engine("generate:tiny", "int4", data_dir)``, which also knows the
whole-model substitutes ``smaller-model`` (tiny-small, 1 layer) and ``wrong-model`` (tiny-bad,
another seed) for ``generate:tiny``.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

WEIGHT_MODES = ("perturb-1", "perturb-5", "int8", "int4", "bf16")
MODEL_MODES = ("smaller-model", "wrong-model")
MODES = WEIGHT_MODES + MODEL_MODES
GROUP = 32
#: Seed of the perturbation noise (per parameter, mixed with the parameter's name).
PERTURB_SEED = 20250117


class TamperError(ValueError):
    """An unknown mode, or a model this mode cannot change."""


def _torch_module(engine: Any) -> Any:
    import torch

    model = getattr(engine, "torch_model", None)
    if model is None:
        model = getattr(engine, "_model", None)
    if not isinstance(model, torch.nn.Module):
        raise TamperError(f"{type(engine).__name__} has no torch model to tamper with")
    return model


def _matrices(model: Any) -> list[tuple[str, Any]]:
    """The floating-point parameters with two or more dimensions, by name (sorted)."""
    return sorted(
        (name, p)
        for name, p in model.named_parameters()
        if p.dim() >= 2 and p.dtype.is_floating_point
    )


def perturb(model: Any, relative: float, seed: int = PERTURB_SEED) -> None:
    """Multiply every weight matrix by ``1 + relative * N(0, 1)``, elementwise, seeded."""
    import torch

    with torch.no_grad():
        for name, param in _matrices(model):
            digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
            generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "big") >> 1)
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            param.mul_((1.0 + relative * noise).to(param.dtype))


def fake_quantize(weight: Any, bits: int, group: int | None) -> Any:
    """``weight`` quantised symmetrically to ``bits`` and back: one scale per row, or per
    ``group`` consecutive inputs of a row when the row length is a multiple of ``group``."""
    import torch

    levels = 2 ** (bits - 1) - 1  # 127 for int8, 7 for int4 (and -8 / -128 at the bottom)
    w = weight.float()
    rows, cols = w.shape[0], w[0].numel()
    flat = w.reshape(rows, cols)
    if group is not None and cols % group == 0 and cols > group:
        blocks = flat.reshape(rows, cols // group, group)
    else:
        blocks = flat.reshape(rows, 1, cols)
    scale = blocks.abs().amax(dim=-1, keepdim=True) / levels
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(blocks / scale), -levels - 1, levels)
    return (q * scale).reshape(weight.shape).to(weight.dtype)


def quantize(model: Any, bits: int, group: int | None) -> None:
    """Weight-only fake quantisation of every weight matrix, in place."""
    import torch

    with torch.no_grad():
        for _, param in _matrices(model):
            param.copy_(fake_quantize(param, bits, group))


def tamper_engine(engine: Any, kind: str) -> None:
    """Change a loaded engine's weights in place (one of `WEIGHT_MODES`).

    Raises `TamperError` for an unknown mode or an engine without a torch model.
    """
    model = _torch_module(engine)
    if kind == "perturb-1":
        perturb(model, 0.01)
    elif kind == "perturb-5":
        perturb(model, 0.05)
    elif kind == "int8":
        quantize(model, 8, None)
    elif kind == "int4":
        quantize(model, 4, GROUP)
    elif kind == "bf16":
        import torch

        model.to(torch.bfloat16)
    else:
        raise TamperError(f"unknown tamper mode {kind!r}; choose one of {', '.join(WEIGHT_MODES)}")


def substitute_variant(variant: str, mode: str) -> str:
    """The tiny variant a ``smaller-model`` (one layer) or ``wrong-model`` (next seed) cheat
    serves instead of ``variant``; registered in ``VARIANTS`` if it is not there already
    (``tiny`` has ``tiny-small`` and ``tiny-bad``)."""
    from dataclasses import replace

    from agora.models.tiny import VARIANTS

    cfg = VARIANTS[variant]
    known = {"tiny": {"smaller-model": "tiny-small", "wrong-model": "tiny-bad"}}
    name = known.get(variant, {}).get(mode)
    if name is None:
        name = f"{variant}-{'small' if mode == 'smaller-model' else 'bad'}"
        if mode == "smaller-model":
            VARIANTS.setdefault(name, replace(cfg, layers=1))
        else:
            VARIANTS.setdefault(name, replace(cfg, seed=cfg.seed + 1))
    return name


async def load_tampered_engine(spec: str, mode: str, data_dir: Path | str) -> Any:
    """A causal LM engine serving ``mode``'s variant while claiming ``spec``'s model id.

    ``spec`` is ``generate:tiny`` (any tiny variant name) or ``generate:<model directory>``;
    ``smaller-model`` and ``wrong-model`` exist only for the tiny models. Raises `TamperError`
    for an unknown mode or a substitute that does not exist for this spec.
    """
    from agora.models.causal_lm import CausalLMEngine
    from agora.models.tiny import VARIANTS, ensure_tiny_model

    if mode not in MODES:
        raise TamperError(f"unknown tamper mode {mode!r}; choose one of {', '.join(MODES)}")
    if not spec.startswith("generate:"):
        raise TamperError(f"{spec!r} is not a generate: spec; only causal LMs carry proofs")
    target = spec.removeprefix("generate:").split("@")[0]
    if target in VARIANTS:
        path = await asyncio.to_thread(ensure_tiny_model, data_dir, target)
    else:
        path = Path(target)
    honest = await CausalLMEngine.load(path, name=target if target in VARIANTS else None)
    if mode in WEIGHT_MODES:
        await asyncio.to_thread(tamper_engine, honest, mode)
        return honest
    if target not in VARIANTS:
        await honest.close()
        raise TamperError(f"{mode} has a substitute only for the tiny models, not {spec!r}")
    substitute = substitute_variant(target, mode)
    impostor_path = await asyncio.to_thread(ensure_tiny_model, data_dir, substitute)
    impostor = await CausalLMEngine.load(impostor_path, name=target)
    impostor.model_id, impostor.model_hash = honest.model_id, honest.model_hash
    await honest.close()
    return impostor
