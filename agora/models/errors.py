"""Every error the inference backends raise, drawn once.

    AgoraError                          (agora.protocol.errors)
    └── ModelError                      anything that went wrong loading or running a model
        ├── EngineUnavailable           the engine's library is not installed, or it needs hardware
        │                               (a GPU) or a cluster (Ray) that this machine does not have
        ├── InvalidSpec                 `load_engine` could not parse an engine spec; the message
        │                               lists the valid forms
        ├── ModelNotFound               no model at that path, or not a usable model directory/file
        ├── UnsupportedOperation        the engine cannot do that (embed() on a generator, score()
        │                               on an engine without logprobs)
        ├── EngineClosed                the engine or batcher was closed; the request never ran
        └── InvalidRequest              bad arguments: no texts, max_tokens out of range, a token id
            │                           outside the vocabulary, a negative temperature ...
            └── ContextTooLong          prompt plus max_tokens does not fit the context window

A request that fails with an ``InvalidRequest`` changed nothing and can be retried once fixed.
Messages say what to do next.
"""

from __future__ import annotations

from agora.protocol.errors import AgoraError


class ModelError(AgoraError):
    """Base of every inference-backend error."""


class EngineUnavailable(ModelError):
    """An engine that cannot run here: its library is missing, or it needs a GPU or a cluster."""


class InvalidSpec(ModelError):
    pass


class ModelNotFound(ModelError):
    pass


class UnsupportedOperation(ModelError):
    pass


class EngineClosed(ModelError):
    pass


class InvalidRequest(ModelError):
    pass


class ContextTooLong(InvalidRequest):
    pass
