"""The gateway: buy inference in the token through an OpenAI-compatible API.

    agora gateway start --dev-key gateway --node http://127.0.0.1:9944
    agora gateway keys new --dev-key alice --deposit 10
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=sk-agora-... python my_app.py

A customer's API key is backed by an escrow channel on the ledger from the customer's account to
the gateway; the gateway routes each request to a miner of the model's subnet, checks the
miner's signed receipt, charges the key exactly the receipt's price, pays miners through
channels of its own, and redeems customers' escrow in batches. See ``docs/gateway.md``.

Importing this package is cheap; the service and its dependencies load on use.
"""

from agora.gateway.config import DEFAULT_MODELS, GatewayConfig, ModelRoute, load_config
from agora.gateway.errors import (
    ApiError,
    AuthenticationFailed,
    BadRequest,
    Conflict,
    ContextTooLong,
    EscrowExhausted,
    Forbidden,
    GatewayConfigError,
    GatewayError,
    ModelNotFound,
    NoMinerAvailable,
    NotFound,
    PayloadTooLarge,
    PaymentError,
    RateLimited,
    SpendLimitReached,
    UpstreamFailed,
)
from agora.gateway.keys import GatewayAccount, GatewayCallError, create_demo_key, create_key_for

__all__ = [
    "DEFAULT_MODELS",
    "ApiError",
    "AuthenticationFailed",
    "BadRequest",
    "Conflict",
    "ContextTooLong",
    "EscrowExhausted",
    "Forbidden",
    "GatewayAccount",
    "GatewayCallError",
    "GatewayConfig",
    "GatewayConfigError",
    "GatewayError",
    "ModelNotFound",
    "ModelRoute",
    "NoMinerAvailable",
    "NotFound",
    "PayloadTooLarge",
    "PaymentError",
    "RateLimited",
    "SpendLimitReached",
    "UpstreamFailed",
    "create_demo_key",
    "create_key_for",
    "load_config",
]
