"""Content-addressed model names, so that a validator knows exactly what a miner claims to serve.

``model_hash(path)`` is SHA-256 over the files that make up a model, in a canonical order::

    sha256( b"agora-model-hash-v1\\n"
            || for each file, sorted by its relative POSIX path (as UTF-8 bytes):
                   u64be(len(path)) || path || u64be(size) || contents )

For a directory, every regular file below it counts (weights, config, tokenizer, custom code),
except what does not change the model's behaviour: hidden files and folders (``.git``,
``.cache``, ``.gitattributes``, Agora's own ``.agora-*`` notes), ``__pycache__``, ``*.pyc``,
``*.lock``, ``README*``, ``LICENSE*``, ``NOTICE*`` and other ``*.md`` files. For a single file
(a GGUF), the file's contents count under the empty path, so renaming it keeps its hash.
Symbolic links are followed (the Hugging Face cache stores snapshots as links).

The public id is ``<task>:<name>@<first 16 hex digits of the hash>``, e.g.
``embed:minilm@5f1c0e3b2a7d9c41``. The name is a human label; only the hash part identifies the
weights.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from agora.models.errors import InvalidRequest, ModelError, ModelNotFound

HASH_DOMAIN = b"agora-model-hash-v1\n"
ID_HASH_HEX = 16
_CHUNK = 1 << 20
_SKIP_SUFFIXES = (".pyc", ".lock", ".md")
_SKIP_PREFIXES = ("readme", "license", "notice")
_NAME_RE = re.compile(r"[^a-z0-9._-]+")
_ID_RE = re.compile(r"^(embed|generate|classify):([a-z0-9._-]{1,64})@([0-9a-f]{16})$")


def _skipped(relative: str) -> bool:
    parts = relative.split("/")
    if any(p.startswith(".") or p == "__pycache__" for p in parts):
        return True
    name = parts[-1].lower()
    return name.endswith(_SKIP_SUFFIXES) or name.startswith(_SKIP_PREFIXES)


def model_files(path: Path) -> list[tuple[str, Path]]:
    """The files that `model_hash` covers, as (relative POSIX path, absolute path), in order.

    Raises `ModelNotFound` if ``path`` does not exist or holds no model file.
    """
    path = Path(path)
    if path.is_file():
        return [("", path)]
    if not path.is_dir():
        raise ModelNotFound(f"no model file or directory at {path}")
    found: list[tuple[str, Path]] = []
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
        for name in files:
            full = Path(root) / name
            relative = full.relative_to(path).as_posix()
            if not _skipped(relative) and full.is_file():
                found.append((relative, full))
    if not found:
        raise ModelNotFound(f"{path} holds no model files")
    found.sort(key=lambda item: item[0].encode("utf-8"))
    return found


def model_hash(path: Path | str) -> str:
    """SHA-256 (hex) of a model directory or file, as described in the module docstring.

    Raises `ModelNotFound` (nothing there) or `ModelError` (a file changed while being hashed).
    """
    digest = hashlib.sha256(HASH_DOMAIN)
    for relative, full in model_files(Path(path)):
        name = relative.encode("utf-8")
        with open(full, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            digest.update(len(name).to_bytes(8, "big") + name + size.to_bytes(8, "big"))
            read = 0
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
                read += len(chunk)
        if read != size:
            raise ModelError(f"{full} changed while it was being hashed; try again")
    return digest.hexdigest()


def clean_name(name: str) -> str:
    """A label usable in a model id: lower case, ``[a-z0-9._-]``, at most 64 characters."""
    cleaned = _NAME_RE.sub("-", name.lower()).strip("-.")[:64]
    return cleaned or "model"


def make_model_id(task: str, name: str, digest: str) -> str:
    """``<task>:<name>@<16 hex>`` from a task, a label and a full `model_hash`."""
    if task not in ("embed", "generate", "classify"):
        raise InvalidRequest(f"task must be 'embed', 'generate' or 'classify', not {task!r}")
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise InvalidRequest("digest must be a SHA-256 hex string")
    return f"{task}:{clean_name(name)}@{digest[:ID_HASH_HEX]}"


@dataclass(frozen=True, slots=True)
class ModelId:
    task: str
    name: str
    hash_prefix: str

    def matches(self, digest: str) -> bool:
        """Whether a full `model_hash` is the one this id names."""
        return digest[:ID_HASH_HEX] == self.hash_prefix


def parse_model_id(model_id: str) -> ModelId:
    """Split a public model id. Raises `InvalidRequest` if it is not of the form above."""
    m = _ID_RE.match(model_id)
    if m is None:
        raise InvalidRequest(
            f"{model_id!r} is not a model id; expected "
            "<embed|generate|classify>:<name>@<16 hex digits>"
        )
    return ModelId(m.group(1), m.group(2), m.group(3))
