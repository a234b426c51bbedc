"""Wallets: a coldkey and a hotkey stored together under one name.

On disk::

    <root>/wallets/<name>/coldkey.json     owns funds; keep it offline when you can
    <root>/wallets/<name>/hotkey.json      runs a miner or validator; may live on a server

``root`` is, in order: the argument, ``$AGORA_HOME``, ``~/.agora``. Directories are created with
mode 0700 and key files with mode 0600 (see :mod:`agora.wallet.keyfile` for the file format).
A :class:`Wallet` holds public information only; decrypting a key takes its password.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
from dataclasses import dataclass
from pathlib import Path

from agora.crypto.keys import Keypair
from agora.wallet.errors import (
    CorruptKeyFile,
    EmptyPassword,
    InvalidSeed,
    InvalidWalletName,
    PasswordUnavailable,
    WalletError,
    WalletExists,
    WalletNotFound,
)
from agora.wallet.keyfile import (
    KdfParams,
    KeyFile,
    KeyKind,
    atomic_write,
    decrypt_keyfile,
    encrypt_keyfile,
    read_keyfile,
)

__all__ = [
    "HOME_ENV",
    "PASSWORD_ENV",
    "Wallet",
    "list_wallets",
    "resolve_password",
    "resolve_root",
    "scan_wallets",
    "wallets_dir",
]

HOME_ENV = "AGORA_HOME"
PASSWORD_ENV = "AGORA_PASSWORD"
COLDKEY_FILE = "coldkey.json"
HOTKEY_FILE = "hotkey.json"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def resolve_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The Agora data directory: ``root`` if given, else ``$AGORA_HOME``, else ``~/.agora``."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".agora"


def wallets_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """Where wallets live: ``<root>/wallets``."""
    return resolve_root(root) / "wallets"


def check_name(name: str) -> str:
    """``name`` itself if it is a safe wallet name (letters, digits, ``_ . -``; at most 64
    characters; starting with a letter or digit), so that no name can escape the wallets
    directory.

    Raises:
        InvalidWalletName: it is not.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidWalletName(
            f"invalid wallet name {name!r}: use up to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def _seed_from_hex(text: str, which: str) -> bytes:
    cleaned = text.strip().lower()
    if cleaned.startswith("0x"):
        cleaned = cleaned[2:]
    if len(cleaned) != 64 or any(c not in "0123456789abcdef" for c in cleaned):
        # Never echo the input: it may be most of a real seed.
        raise InvalidSeed(f"the {which} seed must be 64 hex characters (32 bytes)")
    return bytes.fromhex(cleaned)


def _make_private_dir(path: Path) -> None:
    existed = path.exists()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not existed:
        os.chmod(path, 0o700)


@dataclass(frozen=True)
class Wallet:
    """A named coldkey and hotkey. Holds addresses and file paths, never a decrypted key."""

    name: str
    path: Path
    coldkey_file: KeyFile
    hotkey_file: KeyFile

    @property
    def coldkey_address(self) -> str:
        return self.coldkey_file.address

    @property
    def hotkey_address(self) -> str:
        return self.hotkey_file.address

    @property
    def coldkey_path(self) -> Path:
        return self.coldkey_file.path

    @property
    def hotkey_path(self) -> Path:
        return self.hotkey_file.path

    def coldkey(self, password: str) -> Keypair:
        """Decrypt the coldkey.

        Raises:
            WrongPassword: the password does not open it.
            CorruptKeyFile: the file opens but does not hold the key of its stated address.
        """
        return decrypt_keyfile(self.coldkey_file, password)

    def hotkey(self, password: str) -> Keypair:
        """Decrypt the hotkey (see :meth:`coldkey`)."""
        return decrypt_keyfile(self.hotkey_file, password)

    def __repr__(self) -> str:
        return (
            f"Wallet(name={self.name!r}, coldkey={self.coldkey_address[:12]}…, "
            f"hotkey={self.hotkey_address[:12]}…)"
        )

    # -- creating ------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str,
        password: str,
        root: str | os.PathLike[str] | None = None,
        hotkey_password: str | None = None,
        *,
        kdf: KdfParams | None = None,
        overwrite: bool = False,
    ) -> Wallet:
        """Generate a fresh coldkey and hotkey and store them encrypted.

        The hotkey is encrypted with ``hotkey_password``, or with ``password`` when that is
        ``None``. ``kdf`` defaults to :data:`agora.wallet.keyfile.DEFAULT_KDF`.

        Raises:
            InvalidWalletName, EmptyPassword, WalletExists (unless ``overwrite``), OSError.
        """
        return cls._store(
            name,
            Keypair.generate(),
            Keypair.generate(),
            password,
            hotkey_password,
            root,
            kdf=kdf,
            overwrite=overwrite,
        )

    @classmethod
    def import_(
        cls,
        name: str,
        coldkey_seed_hex: str,
        hotkey_seed_hex: str,
        password: str,
        root: str | os.PathLike[str] | None = None,
        hotkey_password: str | None = None,
        *,
        kdf: KdfParams | None = None,
        overwrite: bool = False,
    ) -> Wallet:
        """Store existing keys given as 32-byte hex seeds (an optional ``0x`` is accepted).

        Raises:
            InvalidSeed, InvalidWalletName, EmptyPassword, WalletExists (unless ``overwrite``),
            OSError.
        """
        coldkey = Keypair(_seed_from_hex(coldkey_seed_hex, "coldkey"))
        hotkey = Keypair(_seed_from_hex(hotkey_seed_hex, "hotkey"))
        return cls._store(
            name, coldkey, hotkey, password, hotkey_password, root, kdf=kdf, overwrite=overwrite
        )

    @classmethod
    def create_dev(
        cls,
        name: str,
        root: str | os.PathLike[str] | None,
        password: str,
        *,
        kdf: KdfParams | None = None,
        overwrite: bool = False,
    ) -> Wallet:
        """Store the well-known dev keys ``Keypair.from_name(name)`` (coldkey) and
        ``Keypair.from_name(name + "/hot")`` (hotkey), so that a local network has known
        accounts. Anyone can derive these keys: never send real funds to them.

        Raises:
            InvalidWalletName, EmptyPassword, WalletExists (unless ``overwrite``), OSError.
        """
        return cls._store(
            name,
            Keypair.from_name(name),
            Keypair.from_name(name + "/hot"),
            password,
            None,
            root,
            kdf=kdf,
            overwrite=overwrite,
        )

    @classmethod
    def _store(
        cls,
        name: str,
        coldkey: Keypair,
        hotkey: Keypair,
        password: str,
        hotkey_password: str | None,
        root: str | os.PathLike[str] | None,
        *,
        kdf: KdfParams | None,
        overwrite: bool,
    ) -> Wallet:
        check_name(name)
        if not password or hotkey_password == "":
            raise EmptyPassword("refusing to encrypt a key with an empty password; choose one")
        directory = wallets_dir(root) / name
        cold_path, hot_path = directory / COLDKEY_FILE, directory / HOTKEY_FILE
        if not overwrite and (cold_path.exists() or hot_path.exists()):
            raise WalletExists(_exists_message(name, directory))
        # Encrypt both before touching the disk, so a failure cannot leave half a wallet.
        cold_data = encrypt_keyfile(coldkey, password, "coldkey", kdf)
        hot_password = password if hotkey_password is None else hotkey_password
        hot_data = encrypt_keyfile(hotkey, hot_password, "hotkey", kdf)

        _make_private_dir(resolve_root(root))
        _make_private_dir(directory.parent)
        _make_private_dir(directory)
        try:
            atomic_write(cold_path, cold_data, overwrite=overwrite)
        except FileExistsError:
            raise WalletExists(_exists_message(name, directory)) from None
        try:
            atomic_write(hot_path, hot_data, overwrite=overwrite)
        except BaseException as exc:
            if not overwrite:  # the coldkey was written a moment ago and never shown: undo it
                with contextlib.suppress(OSError):
                    cold_path.unlink()
            if isinstance(exc, FileExistsError):
                raise WalletExists(_exists_message(name, directory)) from None
            raise
        return cls.load(name, root)

    # -- reading -------------------------------------------------------------------------------

    @classmethod
    def load(cls, name: str, root: str | os.PathLike[str] | None = None) -> Wallet:
        """Read a wallet's public information (addresses, paths). Needs no password.

        Raises:
            InvalidWalletName: ``name`` is not a valid wallet name.
            WalletNotFound: there is no such wallet, or one of its two key files is missing.
            CorruptKeyFile: a key file is damaged.
            OSError: a key file cannot be read.
        """
        check_name(name)
        directory = wallets_dir(root) / name
        return cls(
            name,
            directory,
            _read(name, directory, COLDKEY_FILE, "coldkey"),
            _read(name, directory, HOTKEY_FILE, "hotkey"),
        )


def _exists_message(name: str, directory: Path) -> str:
    return (
        f"wallet {name!r} already exists in {directory}; choose another name, "
        "or pass --overwrite (overwrite=True) to destroy the old keys"
    )


def _read(name: str, directory: Path, filename: str, kind: KeyKind) -> KeyFile:
    path = directory / filename
    try:
        return read_keyfile(path, expected_kind=kind)
    except FileNotFoundError:
        if not directory.exists():
            raise WalletNotFound(
                f"no wallet named {name!r} in {directory.parent}; create one with "
                f"`agora wallet new {name}` or list them with `agora wallet list`"
            ) from None
        raise WalletNotFound(
            f"wallet {name!r} has no {kind} file ({path}); restore it from a backup or "
            "re-import the wallet from its seeds"
        ) from None


def scan_wallets(
    root: str | os.PathLike[str] | None = None,
) -> tuple[list[Wallet], dict[str, WalletError]]:
    """Every wallet under ``root``, sorted by name, and the ones that could not be read (by
    directory name, with the reason). Needs no password.
    """
    directory = wallets_dir(root)
    wallets: list[Wallet] = []
    problems: dict[str, WalletError] = {}
    if not directory.is_dir():
        return wallets, problems
    for entry in sorted(directory.iterdir(), key=lambda p: p.name):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        try:
            wallets.append(Wallet.load(entry.name, root))
        except (WalletNotFound, CorruptKeyFile, InvalidWalletName) as exc:
            problems[entry.name] = exc
    return wallets, problems


def list_wallets(root: str | os.PathLike[str] | None = None) -> list[Wallet]:
    """Every readable wallet under ``root``, sorted by name (see :func:`scan_wallets` for the
    unreadable ones)."""
    return scan_wallets(root)[0]


def _read_password_file(password_file: str) -> str:
    try:
        with open(password_file, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PasswordUnavailable(f"cannot read password file {password_file}: {reason}") from None
    password = text.rstrip("\r\n")  # only the line ending: spaces may belong to the password
    if not password:
        raise EmptyPassword(f"password file {password_file} is empty; write the password in it")
    return password


def resolve_password(
    password_file: str | None = None, prompt: bool = True, confirm: bool = False
) -> str:
    """Find the password for a key, for people and for unattended services alike.

    In order: the first line of ``password_file`` (its line ending removed); the
    ``AGORA_PASSWORD`` environment variable; a ``getpass`` prompt when ``prompt`` is true, asked
    twice when ``confirm`` is true (for new wallets).

    Raises:
        PasswordUnavailable: the file cannot be read, no source applies, or the two typed
            passwords differ.
        EmptyPassword: the file or the prompt gave an empty password.
    """
    if password_file:
        return _read_password_file(password_file)
    env = os.environ.get(PASSWORD_ENV)
    if env:
        return env
    if not prompt:
        raise PasswordUnavailable(
            f"no password given: pass --password-file FILE or set {PASSWORD_ENV}"
        )
    try:
        password = getpass.getpass("Password: ")
        if not password:
            raise EmptyPassword("the password is empty; type one")
        if confirm and getpass.getpass("Repeat password: ") != password:
            raise PasswordUnavailable("the two passwords differ; run the command again")
    except (EOFError, KeyboardInterrupt):
        raise PasswordUnavailable(
            f"no password typed: pass --password-file FILE or set {PASSWORD_ENV}"
        ) from None
    return password
