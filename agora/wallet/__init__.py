"""Wallets: a coldkey (owns funds) and a hotkey (runs a miner or validator) under one name, each
encrypted at rest with a password (Argon2id and XSalsa20-Poly1305).

    from agora.wallet import Wallet, resolve_password

    wallet = Wallet.create("alice", resolve_password(None, prompt=True, confirm=True))
    hotkey = Wallet.load("alice").hotkey(resolve_password(None, prompt=True, confirm=False))

The errors are drawn in :mod:`agora.wallet.errors`.
"""

from agora.wallet.errors import (
    CorruptKeyFile,
    EmptyPassword,
    InvalidSeed,
    InvalidWalletName,
    PasswordUnavailable,
    WalletError,
    WalletExists,
    WalletNotFound,
    WrongPassword,
)
from agora.wallet.keyfile import DEFAULT_KDF, KDF_FOR_TESTS_ONLY, KdfParams, KeyFile
from agora.wallet.wallet import (
    HOME_ENV,
    PASSWORD_ENV,
    Wallet,
    list_wallets,
    resolve_password,
    resolve_root,
    scan_wallets,
)

__all__ = [
    "DEFAULT_KDF",
    "HOME_ENV",
    "KDF_FOR_TESTS_ONLY",
    "PASSWORD_ENV",
    "CorruptKeyFile",
    "EmptyPassword",
    "InvalidSeed",
    "InvalidWalletName",
    "KdfParams",
    "KeyFile",
    "PasswordUnavailable",
    "Wallet",
    "WalletError",
    "WalletExists",
    "WalletNotFound",
    "WrongPassword",
    "list_wallets",
    "resolve_password",
    "resolve_root",
    "scan_wallets",
]
