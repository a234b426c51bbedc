"""Every error the gateway raises on purpose, drawn once.

    AgoraError                              (agora.protocol.errors)
    └── GatewayError                        anything the gateway refuses or cannot do
        ├── GatewayConfigError              a setting cannot work (bad config file, no models)
        ├── ApiError                        answered to an API caller, in OpenAI's error shape
        │   ├── BadRequest            400   malformed JSON, a field of the wrong type, an
        │   │   │                           unsupported parameter (``param`` names it)
        │   │   └── ContextTooLong    400   prompt (+ max_tokens) over the model's context
        │   ├── AuthenticationFailed  401   no key, an unknown or revoked key, a bad signature
        │   ├── EscrowExhausted       402   the key's escrow cannot cover this request
        │   ├── Forbidden             403   a signed request for someone else's key or channel
        │   ├── ModelNotFound         404   no model of that name (the message lists them)
        │   ├── NotFound              404   no such route or key
        │   ├── Conflict              409   a replayed signed call
        │   ├── PayloadTooLarge       413   the body is over the limit
        │   ├── RateLimited           429   too many requests for this key (Retry-After)
        │   ├── SpendLimitReached     429   the key's daily spend limit is used up
        │   ├── UpstreamFailed        502   every miner tried failed (nothing is charged)
        │   └── NoMinerAvailable      503   no healthy miner serves the model right now
        └── PaymentError                    a ledger step of a payment failed (logged, retried)

An API error's JSON is ``{"error": {"message", "type", "param", "code"}}`` as OpenAI sends it; the
``code`` is the class name in snake case unless given, and the message says what to do next.
A refused request charges nothing and changes nothing.
"""

from __future__ import annotations

from typing import Any

from agora.protocol.errors import AgoraError

__all__ = [
    "ApiError",
    "AuthenticationFailed",
    "BadRequest",
    "Conflict",
    "ContextTooLong",
    "EscrowExhausted",
    "Forbidden",
    "GatewayConfigError",
    "GatewayError",
    "ModelNotFound",
    "NoMinerAvailable",
    "NotFound",
    "PayloadTooLarge",
    "PaymentError",
    "RateLimited",
    "SpendLimitReached",
    "UpstreamFailed",
]


class GatewayError(AgoraError):
    """Base of every gateway error."""


class GatewayConfigError(GatewayError):
    pass


class PaymentError(GatewayError):
    pass


class ApiError(GatewayError):
    """An error answered to an API caller. Subclasses fix ``status`` and ``type``."""

    status = 400
    type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self._code = code
        self.retry_after = retry_after
        self.extra = extra or {}

    @property
    def code(self) -> str:
        return self._code or super().code

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.code,
        }
        error.update(self.extra)
        return {"error": error}

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, round(self.retry_after + 0.499)))
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="agora-gateway"'
        return headers


class BadRequest(ApiError):
    status = 400


class ContextTooLong(BadRequest):
    def __init__(self, message: str, *, param: str | None = "messages", **kw: Any) -> None:
        super().__init__(message, param=param, code="context_length_exceeded", **kw)


class AuthenticationFailed(ApiError):
    status = 401
    type = "authentication_error"


class EscrowExhausted(ApiError):
    status = 402
    type = "insufficient_quota"


class Forbidden(ApiError):
    status = 403
    type = "permission_error"


class ModelNotFound(ApiError):
    status = 404

    def __init__(self, message: str, **kw: Any) -> None:
        super().__init__(message, param="model", code="model_not_found", **kw)


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class PayloadTooLarge(ApiError):
    status = 413


class RateLimited(ApiError):
    status = 429
    type = "rate_limit_error"

    def __init__(self, message: str, **kw: Any) -> None:
        kw.setdefault("code", "rate_limit_exceeded")
        super().__init__(message, **kw)


class SpendLimitReached(ApiError):
    status = 429
    type = "insufficient_quota"


class UpstreamFailed(ApiError):
    status = 502
    type = "api_error"


class NoMinerAvailable(ApiError):
    status = 503
    type = "api_error"
