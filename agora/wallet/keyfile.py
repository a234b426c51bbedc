"""One key, encrypted at rest with a password.

A key file is a small JSON document. The seed is encrypted with ``nacl.secret.SecretBox``
(XSalsa20-Poly1305) under a key derived from the password with Argon2id; the address stays in
clear so that wallets can be listed without a password::

    {
      "version": 1,
      "kind": "coldkey",
      "address": "<64 hex: the Ed25519 public key>",
      "kdf": {"name": "argon2id", "opslimit": 3, "memlimit": 268435456, "salt": "<32 hex>"},
      "cipher": {"name": "xsalsa20-poly1305", "nonce": "<48 hex>", "ciphertext": "<96 hex>"},
      "checksum": "<64 hex: SHA-256 of the canonical bytes of every other field>"
    }

The checksum is not a security measure (anyone can recompute it); it tells an accidentally
damaged file (:class:`CorruptKeyFile`) apart from a wrong password (:class:`WrongPassword`), which
the cipher's authentication tag alone cannot do. The tag is what makes tampering with the
ciphertext fail, and after decryption the seed's address must equal the stored one, so a file
whose clear address was altered is refused too.

Files are written atomically (a temporary file in the same directory, fsync, then a hard link or
rename, then an fsync of the directory) with mode 0600, so a crash leaves either the old file or
the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
from nacl.secret import SecretBox
from nacl.utils import random as random_bytes

from agora.crypto.keys import Keypair
from agora.protocol.codec import canonical_bytes, is_hex, sha256_hex
from agora.wallet.errors import CorruptKeyFile, EmptyPassword, WrongPassword

__all__ = [
    "DEFAULT_KDF",
    "KDF_FOR_TESTS_ONLY",
    "MAX_MEMLIMIT",
    "KdfParams",
    "KeyFile",
    "KeyKind",
    "atomic_write",
    "decrypt_keyfile",
    "encrypt_keyfile",
    "read_keyfile",
    "write_keyfile",
]

KeyKind = Literal["coldkey", "hotkey"]
KEY_KINDS: tuple[KeyKind, ...] = ("coldkey", "hotkey")

FORMAT_VERSION = 1
KDF_NAME = "argon2id"
CIPHER_NAME = "xsalsa20-poly1305"
MAX_MEMLIMIT = 4 * 1024**3
"""Largest Argon2id memory cost a key file may ask for (4 GiB), so a hostile file cannot make
the reader allocate without bound. libsodium's SENSITIVE preset is 1 GiB."""
MAX_FILE_BYTES = 64 * 1024
_SEED_BYTES = 32
_CIPHERTEXT_BYTES = _SEED_BYTES + SecretBox.MACBYTES


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost: ``opslimit`` passes over ``memlimit`` bytes of memory."""

    opslimit: int
    memlimit: int

    def __post_init__(self) -> None:
        if not argon2id.OPSLIMIT_MIN <= self.opslimit <= argon2id.OPSLIMIT_MAX:
            raise ValueError(
                f"opslimit must be between {argon2id.OPSLIMIT_MIN} and {argon2id.OPSLIMIT_MAX}"
            )
        if not argon2id.MEMLIMIT_MIN <= self.memlimit <= MAX_MEMLIMIT:
            raise ValueError(f"memlimit must be between {argon2id.MEMLIMIT_MIN} and {MAX_MEMLIMIT}")


DEFAULT_KDF = KdfParams(argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE)
"""libsodium's MODERATE preset: 3 passes over 256 MiB, about half a second per key."""

KDF_FOR_TESTS_ONLY = KdfParams(argon2id.OPSLIMIT_MIN, argon2id.MEMLIMIT_MIN)
"""The cheapest Argon2id setting (1 pass over 8 KiB). It keeps test suites fast and protects
nothing: never use it for a key that matters."""


@dataclass(frozen=True)
class KeyFile:
    """A parsed key file: everything in it, the seed still encrypted."""

    path: Path
    kind: KeyKind
    address: str
    kdf: KdfParams
    salt: bytes
    nonce: bytes
    ciphertext: bytes

    def __repr__(self) -> str:
        return f"KeyFile(kind={self.kind}, address={self.address[:12]}…, path={self.path})"


def _password_bytes(password: str) -> bytes:
    # NFC, so the same password typed on two systems that compose accents differently still opens
    # the file.
    return unicodedata.normalize("NFC", password).encode("utf-8")


def _derive_key(password: str, salt: bytes, kdf: KdfParams) -> bytes:
    return argon2id.kdf(
        SecretBox.KEY_SIZE,
        _password_bytes(password),
        salt,
        opslimit=kdf.opslimit,
        memlimit=kdf.memlimit,
    )


def _body(
    kind: KeyKind, address: str, kdf: KdfParams, salt: bytes, nonce: bytes, ciphertext: bytes
) -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "kind": kind,
        "address": address,
        "kdf": {
            "name": KDF_NAME,
            "opslimit": kdf.opslimit,
            "memlimit": kdf.memlimit,
            "salt": salt.hex(),
        },
        "cipher": {"name": CIPHER_NAME, "nonce": nonce.hex(), "ciphertext": ciphertext.hex()},
    }


def encrypt_keyfile(
    keypair: Keypair, password: str, kind: KeyKind, kdf: KdfParams | None = None
) -> bytes:
    """The bytes of a key file holding ``keypair`` encrypted under ``password``.

    Raises:
        EmptyPassword: ``password`` is empty.
        ValueError: ``kind`` is not ``"coldkey"`` or ``"hotkey"``.
    """
    if kind not in KEY_KINDS:
        raise ValueError(f"kind must be one of {KEY_KINDS}, not {kind!r}")
    if not password:
        raise EmptyPassword("refusing to encrypt a key with an empty password; choose one")
    params = DEFAULT_KDF if kdf is None else kdf
    salt = random_bytes(argon2id.SALTBYTES)
    nonce = random_bytes(SecretBox.NONCE_SIZE)
    ciphertext = SecretBox(_derive_key(password, salt, params)).encrypt(keypair.seed, nonce)
    body = _body(kind, keypair.address, params, salt, nonce, ciphertext.ciphertext)
    document = {**body, "checksum": sha256_hex(canonical_bytes(body))}
    return (json.dumps(document, indent=2) + "\n").encode("ascii")


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open a directory; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` with mode 0600 so that readers see the old file or the new one.

    Without ``overwrite`` the final step is a hard link, which fails atomically when ``path``
    exists, so two writers racing for the same name cannot both win.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
        OSError: the directory is missing or not writable, the disk is full, ...
    """
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o600)  # mkstemp already uses 0600; say so explicitly
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise
            except OSError as exc:  # a filesystem without hard links
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                    raise
                if path.exists():
                    raise FileExistsError(errno.EEXIST, "file exists", str(path)) from None
                os.replace(tmp, path)
        _fsync_directory(directory)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_keyfile(
    path: Path,
    keypair: Keypair,
    password: str,
    kind: KeyKind,
    *,
    kdf: KdfParams | None = None,
    overwrite: bool = False,
) -> KeyFile:
    """Encrypt ``keypair`` under ``password`` and store it at ``path`` (see :func:`atomic_write`).

    Raises:
        EmptyPassword: ``password`` is empty.
        FileExistsError: ``path`` exists and ``overwrite`` is false.
        OSError: the file cannot be written.
    """
    data = encrypt_keyfile(keypair, password, kind, kdf)
    atomic_write(path, data, overwrite=overwrite)
    return _parse(path, data)


def _hex_field(path: Path, section: dict[str, Any], key: str, n_bytes: int) -> bytes:
    value = section.get(key)
    if not is_hex(value, 2 * n_bytes):
        raise CorruptKeyFile(path, f"{key} is not {n_bytes} bytes of lowercase hex")
    assert isinstance(value, str)
    return bytes.fromhex(value)


def _int_field(path: Path, section: dict[str, Any], key: str) -> int:
    value = section.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise CorruptKeyFile(path, f"{key} is not an integer")
    return value


def _section(path: Path, document: dict[str, Any], key: str) -> dict[str, Any]:
    value = document.get(key)
    if not isinstance(value, dict):
        raise CorruptKeyFile(path, f"the {key!r} section is missing")
    return value


def _parse(path: Path, data: bytes) -> KeyFile:
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CorruptKeyFile(path, "not valid JSON; the file may be truncated") from None
    if not isinstance(document, dict):
        raise CorruptKeyFile(path, "not a JSON object")
    version = document.get("version")
    if version != FORMAT_VERSION:
        raise CorruptKeyFile(
            path, f"unknown format version {version!r}; this Agora reads version {FORMAT_VERSION}"
        )
    checksum = document.get("checksum")
    body = {key: value for key, value in document.items() if key != "checksum"}
    try:
        actual = sha256_hex(canonical_bytes(body))
    except ValueError:
        raise CorruptKeyFile(path, "a field holds a value a key file never contains") from None
    if checksum != actual:
        raise CorruptKeyFile(path, "checksum mismatch: the contents were altered or damaged")

    kind = document.get("kind")
    if kind not in KEY_KINDS:
        raise CorruptKeyFile(path, f"kind {kind!r} is neither coldkey nor hotkey")
    address = document.get("address")
    if not is_hex(address, 64):
        raise CorruptKeyFile(path, "address is not 32 bytes of lowercase hex")
    assert isinstance(address, str)

    kdf_section = _section(path, document, "kdf")
    if kdf_section.get("name") != KDF_NAME:
        raise CorruptKeyFile(path, f"unsupported kdf {kdf_section.get('name')!r}")
    try:
        kdf = KdfParams(
            _int_field(path, kdf_section, "opslimit"), _int_field(path, kdf_section, "memlimit")
        )
    except ValueError as exc:
        raise CorruptKeyFile(path, f"kdf parameters out of range: {exc}") from None
    salt = _hex_field(path, kdf_section, "salt", argon2id.SALTBYTES)

    cipher_section = _section(path, document, "cipher")
    if cipher_section.get("name") != CIPHER_NAME:
        raise CorruptKeyFile(path, f"unsupported cipher {cipher_section.get('name')!r}")
    nonce = _hex_field(path, cipher_section, "nonce", SecretBox.NONCE_SIZE)
    ciphertext = _hex_field(path, cipher_section, "ciphertext", _CIPHERTEXT_BYTES)
    return KeyFile(path, kind, address, kdf, salt, nonce, ciphertext)


def read_keyfile(path: Path, expected_kind: KeyKind | None = None) -> KeyFile:
    """Read and check a key file without decrypting it (no password needed).

    Raises:
        FileNotFoundError: there is no file at ``path``.
        CorruptKeyFile: the file is truncated, altered, of an unknown version, too large, or
            holds the other kind of key than ``expected_kind``.
        OSError: the file cannot be read (permissions, ...).
    """
    with open(path, "rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise CorruptKeyFile(path, f"larger than {MAX_FILE_BYTES} bytes")
    if not data:
        raise CorruptKeyFile(path, "the file is empty")
    keyfile = _parse(path, data)
    if expected_kind is not None and keyfile.kind != expected_kind:
        raise CorruptKeyFile(path, f"holds a {keyfile.kind}, expected a {expected_kind}")
    return keyfile


def decrypt_keyfile(keyfile: KeyFile, password: str) -> Keypair:
    """The key pair stored in ``keyfile``. Costs one Argon2id derivation.

    Raises:
        WrongPassword: ``password`` does not open the file.
        CorruptKeyFile: it opens, but the seed does not belong to the address written in clear.
    """
    key = _derive_key(password, keyfile.salt, keyfile.kdf)
    try:
        seed = SecretBox(key).decrypt(keyfile.ciphertext, keyfile.nonce)
    except nacl.exceptions.CryptoError:
        raise WrongPassword(
            f"wrong password for the {keyfile.kind} in {keyfile.path}; try again "
            "(check --password-file or AGORA_PASSWORD)"
        ) from None
    keypair = Keypair(seed)
    if keypair.address != keyfile.address:
        raise CorruptKeyFile(keyfile.path, "the decrypted key does not match the stored address")
    return keypair
