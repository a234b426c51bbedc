"""The gateway's settings: which model names map to which subnets, what it charges and how it
pays, how it routes. Everything ``agora gateway start`` takes, except its keys.

A config file (``--config gateway.toml``) overrides any default; amounts are in tokens (written as
strings or integers, never floats: ``miner_deposit = "0.5"``)::

    redeem_interval_s = 30
    miner_deposit = "1"

    [models.minilm]
    netuid = 1
    task = "embed"
    tokenizer = "minilm"            # or a path to a tokenizer.json / a model folder
    context_length = 256
    model_prefix = "embed:minilm@"  # serve only miners whose /health model starts with this

    [models.tiny-llm]
    netuid = 2
    task = "generate"
    tokenizer = "tiny"
    context_length = 512
    model_prefix = "generate:tiny@"

Without a ``[models]`` table the two models above are served.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from agora.chain.client import DEFAULT_URL
from agora.gateway.errors import GatewayConfigError
from agora.protocol.units import TOKEN, parse_amount

__all__ = ["DEFAULT_MODELS", "GatewayConfig", "ModelRoute", "load_config"]

Task = Literal["embed", "generate"]


@dataclass(frozen=True)
class ModelRoute:
    """One model name of the OpenAI API and the subnet that serves it."""

    name: str
    netuid: int
    task: Task
    tokenizer: str
    context_length: int
    model_prefix: str | None = None
    chat_template: str = "simple"
    default_max_tokens: int = 256
    owned_by: str = "agora"

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 128 or any(c.isspace() for c in self.name):
            raise GatewayConfigError(f"model name {self.name!r}: 1-128 characters, no spaces")
        if self.task not in ("embed", "generate"):
            raise GatewayConfigError(f"model {self.name}: task must be embed or generate")
        if self.netuid < 0 or self.context_length < 2 or self.default_max_tokens < 1:
            raise GatewayConfigError(
                f"model {self.name}: netuid >= 0, context_length >= 2, default_max_tokens >= 1"
            )
        if self.chat_template not in ("simple",):
            raise GatewayConfigError(f"model {self.name}: the only chat template is 'simple'")


DEFAULT_MODELS: tuple[ModelRoute, ...] = (
    ModelRoute("minilm", 1, "embed", "minilm", 256, "embed:minilm@"),
    ModelRoute("tiny-llm", 2, "generate", "tiny", 512, "generate:tiny@"),
)

_AMOUNTS = {"min_deposit", "miner_deposit", "float_target", "redeem_min", "default_daily_limit"}


@dataclass(frozen=True)
class GatewayConfig:
    """All settings. Amounts are in units (10^9 per token)."""

    node_url: str = DEFAULT_URL
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = field(default_factory=lambda: Path.home() / ".agora" / "gateway")
    models: tuple[ModelRoute, ...] = DEFAULT_MODELS
    register: bool = True
    max_burn: int | None = None
    # customers: escrow channels payer=customer, payee=signer=gateway
    min_deposit: int = TOKEN // 10
    min_blocks_left: int = 50
    default_rpm: float = 600.0
    default_burst: int = 100
    default_daily_limit: int | None = None
    markup_bps: int = 0
    redeem_interval_s: float = 30.0
    redeem_min: int = 0
    # miners: channels payer=signer=gateway, payee=miner hotkey
    miner_deposit: int = TOKEN
    miner_channel_timeout: int = 1_000_000
    voucher_interval_s: float = 0.05
    voucher_flush_s: float = 2.0
    float_target: int = 0
    # routing
    metagraph_refresh_s: float = 12.0
    health_interval_s: float = 5.0
    request_timeout_s: float = 60.0
    attempt_timeout_s: float = 20.0
    stream_idle_timeout_s: float = 15.0
    max_attempts: int = 3
    exploration: float = 0.05
    max_body_bytes: int = 4 << 20
    usage_flush_s: float = 0.05

    def __post_init__(self) -> None:
        if not self.models:
            raise GatewayConfigError("the gateway needs at least one model")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise GatewayConfigError(f"model names must be unique: {names}")
        if not 0 <= self.port <= 65535:
            raise GatewayConfigError(f"--port {self.port} is outside 0..65535")
        if not 0 <= self.markup_bps <= 100_000:
            raise GatewayConfigError("markup_bps must be within 0..100000")
        if not 0.0 <= self.exploration <= 1.0:
            raise GatewayConfigError("exploration is a probability: 0..1")
        if self.max_attempts < 1 or self.miner_deposit < 1:
            raise GatewayConfigError("max_attempts and miner_deposit must be positive")

    def model(self, name: str) -> ModelRoute | None:
        for route in self.models:
            if route.name == name:
                return route
        return None

    @property
    def db_path(self) -> Path:
        return self.data_dir / "gateway.sqlite"

    def with_overrides(self, **changes: Any) -> GatewayConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _amount(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        raise GatewayConfigError(f'{name}: write an amount of tokens like "0.5"')
    try:
        return parse_amount(str(value))
    except ValueError as error:
        raise GatewayConfigError(f"{name}: {error}") from None


def load_config(path: Path | None, **overrides: Any) -> GatewayConfig:
    """Defaults, then the TOML file at ``path`` (if any), then ``overrides`` that are not None.

    Raises:
        GatewayConfigError: unreadable file, an unknown setting, a value of the wrong kind.
    """
    settings: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise GatewayConfigError(f"no config file at {path}") from None
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise GatewayConfigError(f"cannot read {path}: {error}") from None
        known = {f.name for f in fields(GatewayConfig)}
        for key, value in data.items():
            if key == "models":
                settings["models"] = _models(value)
            elif key not in known:
                raise GatewayConfigError(f"{path}: unknown setting {key!r}")
            elif key in _AMOUNTS:
                settings[key] = _amount(key, value)
            elif key == "data_dir":
                settings[key] = Path(value)
            else:
                settings[key] = value
    settings.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return GatewayConfig(**settings)
    except TypeError as error:
        raise GatewayConfigError(f"bad setting: {error}") from None


def _models(table: Any) -> tuple[ModelRoute, ...]:
    if not isinstance(table, dict) or not table:
        raise GatewayConfigError("[models.NAME] tables: at least one model")
    routes = []
    allowed = {f.name for f in fields(ModelRoute)} - {"name"}
    for name, spec in table.items():
        if not isinstance(spec, dict):
            raise GatewayConfigError(f"[models.{name}] must be a table")
        unknown = set(spec) - allowed
        if unknown:
            raise GatewayConfigError(f"[models.{name}]: unknown keys {sorted(unknown)}")
        try:
            routes.append(ModelRoute(name=name, **spec))
        except TypeError as error:
            raise GatewayConfigError(f"[models.{name}]: {error}") from None
    return tuple(routes)
