"""Every error the wallet raises, drawn once.

    AgoraError                          (agora.protocol.errors)
    └── WalletError                     anything that went wrong with a wallet or a key file
        ├── InvalidWalletName           a name that is not a safe directory name
        ├── InvalidSeed                 an imported seed that is not 32 bytes of hex
        ├── WalletNotFound              no wallet of that name under the root
        ├── WalletExists                creating would overwrite a wallet (pass overwrite=True)
        ├── WrongPassword               the password does not decrypt the key file
        ├── CorruptKeyFile              a key file is unreadable, truncated or altered
        ├── EmptyPassword               refusing to encrypt a key with an empty password
        └── PasswordUnavailable         no password file, no AGORA_PASSWORD, and no prompt allowed
                                        (or the two typed passwords differ)

Messages say what to do next; none of them ever contains a seed or a password.
"""

from __future__ import annotations

from pathlib import Path

from agora.protocol.errors import AgoraError


class WalletError(AgoraError):
    """Base of every wallet error."""


class InvalidWalletName(WalletError):
    pass


class InvalidSeed(WalletError):
    pass


class WalletNotFound(WalletError):
    pass


class WalletExists(WalletError):
    pass


class WrongPassword(WalletError):
    pass


class EmptyPassword(WalletError):
    pass


class PasswordUnavailable(WalletError):
    pass


class CorruptKeyFile(WalletError):
    """A key file that cannot be read. ``path`` names it; the message says what is wrong."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(
            f"key file {self.path} is damaged ({reason}); restore it from a backup "
            "or re-import the wallet from its seeds"
        )
