"""Spread one miner's model over a Ray cluster with Ray Serve.

`RayServeEngine.create(spec, data_dir, address=..., replicas=N)` deploys a Ray Serve
application with N replicas of `ModelReplica`; each replica loads the engine ``spec`` names
(``load_engine(spec, data_dir)`` on its own node, with a `BatchedEngine` in front so the
requests Ray routes to it concurrently are batched) and the miner talks to them through a
`DeploymentHandle`. `RayServeEngine` is an `Engine`, so the rest of the miner cannot tell.

Ray routes each call to a replica with free capacity (``max_ongoing_requests`` per replica);
streams are Serve streaming calls. Exceptions raised in a replica come back as the same Agora
exception type (Ray's ``RayTaskError`` subclasses the original class).

Requirements: ``pip install "ray[serve]"`` and, on every node, the same ``agora`` package; a
model given by path must exist at that path on every node (``generate:tiny`` is rebuilt
identically on each node). No HTTP proxy is started: the app is reachable only through handles.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from agora.models.base import Engine, GenerateRequest, GenerateResult, TokenChunk, check_texts
from agora.models.errors import (
    EngineClosed,
    EngineUnavailable,
    InvalidRequest,
    UnsupportedOperation,
)
from agora.protocol.errors import AgoraError

DEFAULT_MAX_ONGOING = 16


def import_ray() -> tuple[Any, Any]:
    """The ``ray`` and ``ray.serve`` modules. Raises `EngineUnavailable` if not installed."""
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise EngineUnavailable(
            'Ray Serve is not installed: pip install "ray[serve]" (Agora is tested with 2.60)'
        ) from exc
    return ray, serve


def connect(address: str = "local", *, num_cpus: int | None = None) -> None:
    """Join or start a Ray cluster, unless this process is connected already.

    ``local`` starts a Ray instance in this process (``num_cpus`` as given, default all
    cores); ``auto`` joins the cluster this machine is part of; anything else is passed as
    ``address`` to ``ray.init`` (``HOST:PORT`` or ``ray://HOST:PORT``).

    Raises `EngineUnavailable` if Ray is missing or the cluster cannot be reached.
    """
    ray, _ = import_ray()
    if ray.is_initialized():
        return
    try:
        if address == "local":
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise EngineUnavailable(f"cannot reach a Ray cluster at {address!r}: {exc}") from exc


class ModelReplica:
    """One Ray Serve replica: an engine loaded from a spec, behind a `BatchedEngine`."""

    # Ray Serve awaits an async constructor (ray.serve._private.replica: "This allows
    # deployments to define an async __init__"): the replica is ready once the model is loaded.
    async def __init__(self, spec: str, data_dir: str, max_batch_size: int = 16) -> None:  # type: ignore[misc]
        from agora.models.batcher import BatchedEngine
        from agora.models.registry import load_engine

        engine = await load_engine(spec, Path(data_dir))
        self.engine = BatchedEngine(engine, max_batch_size=max_batch_size)

    async def info(self) -> dict[str, Any]:
        return self.engine.engine.info().to_dict()

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await self.engine.embed(texts)

    async def generate_batch(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results = await self.engine.generate_batch([GenerateRequest(**r) for r in requests])
        return [r.to_dict() for r in results]

    async def stream(
        self, prompt: str, max_tokens: int, temperature: float, seed: int | None
    ) -> AsyncIterator[dict[str, Any]]:
        async for chunk in self.engine.stream(prompt, max_tokens, temperature, seed):
            yield chunk.to_dict()

    async def score(self, prompt: str, continuation_token_ids: list[int]) -> list[float]:
        return await self.engine.score(prompt, continuation_token_ids)

    async def count_tokens(self, text: str) -> int:
        return await self.engine.count_tokens(text)


class RayServeEngine(Engine):
    """An engine whose model runs as Ray Serve replicas. Build with ``await create(...)``."""

    engine_name = "ray"

    def __init__(self, handle: Any, app_name: str, info: dict[str, Any]) -> None:
        self._handle = handle
        self.app_name = app_name
        self.model_id = info["model_id"]
        self.model_hash = info["model_hash"]
        self.task = info["task"]
        self.context_length = int(info["context_length"])
        self.dimension = info.get("dimension")
        self.replica_engine = info["engine"]
        self._closed = False

    @classmethod
    async def create(
        cls,
        spec: str,
        data_dir: Path | str,
        *,
        address: str = "local",
        replicas: int = 2,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        app_name: str | None = None,
        max_ongoing_requests: int = DEFAULT_MAX_ONGOING,
    ) -> RayServeEngine:
        """Deploy ``replicas`` replicas of the engine ``spec`` names and wait until they serve.

        ``app_name`` names the Serve application (default: random); deploying again under a
        name replaces that application. Raises `EngineUnavailable`, or what loading the model
        raises in a replica.
        """
        if replicas < 1:
            raise InvalidRequest("replicas must be at least 1")
        _, serve = import_ray()
        await asyncio.to_thread(connect, address)
        name = app_name or f"agora-{secrets.token_hex(4)}"
        deployment = serve.deployment(
            ModelReplica,
            name="ModelReplica",
            num_replicas=replicas,
            max_ongoing_requests=max_ongoing_requests,
            ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus},
        )
        app = deployment.bind(spec, str(Path(data_dir).resolve()))

        def deploy() -> Any:
            serve.start(proxy_location="Disabled")
            return serve.run(app, name=name, route_prefix=None)

        handle = await asyncio.to_thread(deploy)
        info = await handle.info.remote()
        return cls(handle, name, info)

    async def _call(self, method: str, *args: Any) -> Any:
        """Call a replica method; an Agora error raised there is re-raised here as itself."""
        if self._closed:
            raise EngineClosed("the Ray Serve engine is closed")
        try:
            return await getattr(self._handle, method).remote(*args)
        except Exception as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, AgoraError):
                raise cause from None
            raise

    def _require(self, task: str) -> None:
        if self.task != task:
            raise UnsupportedOperation(f"{self.model_id} is a {self.task} model, not {task}")

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self._require("embed")
        result: list[list[float]] = await self._call("embed", check_texts(texts))
        return result

    async def generate_batch(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        self._require("generate")
        fields = ("prompt", "max_tokens", "temperature", "seed")
        payload = [{f: getattr(r, f) for f in fields} for r in requests]
        results = await self._call("generate_batch", payload)
        return [GenerateResult.from_dict(r) for r in results]

    async def stream(
        self,
        prompt: str,
        max_tokens: int = 64,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> AsyncIterator[TokenChunk]:
        self._require("generate")
        if self._closed:
            raise EngineClosed("the Ray Serve engine is closed")
        request = GenerateRequest(prompt, max_tokens, temperature, seed)
        handle = self._handle.options(stream=True)
        chunks = handle.stream.remote(
            request.prompt, request.max_tokens, request.temperature, request.seed
        )
        try:
            async for chunk in chunks:
                yield TokenChunk.from_dict(chunk)
        except Exception as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, AgoraError):
                raise cause from None
            raise

    async def score(self, prompt: str, continuation_token_ids: Sequence[int]) -> list[float]:
        self._require("generate")
        result: list[float] = await self._call("score", prompt, list(continuation_token_ids))
        return result

    async def count_tokens(self, text: str) -> int:
        return int(await self._call("count_tokens", text))

    async def close(self) -> None:
        """Delete the Serve application (its replicas stop). Ray itself keeps running."""
        if self._closed:
            return
        self._closed = True
        _, serve = import_ray()
        await asyncio.to_thread(serve.delete, self.app_name)
