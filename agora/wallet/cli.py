"""``agora wallet ...``: create, import, list and inspect wallets from the command line.

Every command takes ``--root`` (default ``$AGORA_HOME``, then ``~/.agora``). Commands that
encrypt keys read the password from ``--password-file``, else ``$AGORA_PASSWORD``, else a prompt.
Errors are one line on stderr saying what to do next, with exit code 1.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from agora.wallet.errors import InvalidSeed, WalletError
from agora.wallet.keyfile import KeyFile
from agora.wallet.wallet import Wallet, resolve_password, scan_wallets, wallets_dir

__all__ = ["app"]

app = typer.Typer(
    name="wallet",
    help="Wallets: a coldkey that owns funds and a hotkey that runs a miner or validator.",
    no_args_is_help=True,
    add_completion=False,
)

RootOption = Annotated[
    Path | None,
    typer.Option(
        "--root",
        envvar="AGORA_HOME",
        help="Agora data directory; wallets live in ROOT/wallets. Default: ~/.agora.",
        show_default=False,
    ),
]
PasswordFileOption = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        help="Read the password from this file (else $AGORA_PASSWORD, else a prompt).",
        show_default=False,
    ),
]
HotkeyPasswordFileOption = Annotated[
    Path | None,
    typer.Option(
        "--hotkey-password-file",
        help="Encrypt the hotkey with a different password, read from this file.",
        show_default=False,
    ),
]
OverwriteOption = Annotated[
    bool,
    typer.Option("--overwrite", help="Replace an existing wallet of that name. Its keys are lost."),
]


@contextmanager
def _errors_as_one_line() -> Iterator[None]:
    """Turn the errors a user can fix into one line on stderr and exit code 1."""
    try:
        yield
    except WalletError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        typer.echo(
            f"error: {exc.strerror or exc}{where}; check the path and its permissions", err=True
        )
        raise typer.Exit(1) from None


def _console() -> Console:
    console = Console()
    if not console.is_terminal:  # piped: do not fold 64-character addresses at 80 columns
        console = Console(width=max(console.width, 200))
    return console


def _kdf_text(keyfile: KeyFile) -> str:
    mib = keyfile.kdf.memlimit / (1024 * 1024)
    return f"argon2id, {keyfile.kdf.opslimit} passes over {mib:g} MiB"


def _wallet_table(wallet: Wallet, title: str) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("name", wallet.name)
    table.add_row("coldkey", wallet.coldkey_address)
    table.add_row("hotkey", wallet.hotkey_address)
    table.add_row("coldkey file", str(wallet.coldkey_path))
    table.add_row("hotkey file", str(wallet.hotkey_path))
    return table


def _loose_permissions(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False


def _password(password_file: Path | None, confirm: bool) -> str:
    return resolve_password(str(password_file) if password_file else None, True, confirm)


def _hotkey_password(hotkey_password_file: Path | None) -> str | None:
    if hotkey_password_file is None:
        return None
    return resolve_password(str(hotkey_password_file), False, False)


def _read_seed_file(path: Path, which: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        raise InvalidSeed(f"cannot read the {which} seed file {path}; check the path") from None


@app.command("new")
def new(
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="Wallet name: letters, digits, '_', '.', '-'.")
    ],
    root: RootOption = None,
    password_file: PasswordFileOption = None,
    hotkey_password_file: HotkeyPasswordFileOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Create a wallet with a fresh coldkey and hotkey, encrypted with a password.

    The password comes from --password-file, else $AGORA_PASSWORD,
    else it is asked for twice.
    Back up the wallet directory and remember the password:
    without both, the keys are lost.

    Example:

        agora wallet new alice --password-file ~/.secrets/alice
    """
    with _errors_as_one_line():
        password = _password(password_file, confirm=True)
        wallet = Wallet.create(
            name,
            password,
            root,
            hotkey_password=_hotkey_password(hotkey_password_file),
            overwrite=overwrite,
        )
    console = _console()
    console.print(_wallet_table(wallet, f"Created wallet {name}"))
    console.print(
        f"Back up {wallet.path} and remember the password: without both, the keys are lost."
    )


@app.command("import")
def import_(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Name for the imported wallet.")],
    coldkey_seed: Annotated[
        str | None,
        typer.Option("--coldkey-seed", help="Coldkey seed: 64 hex characters.", show_default=False),
    ] = None,
    hotkey_seed: Annotated[
        str | None,
        typer.Option("--hotkey-seed", help="Hotkey seed: 64 hex characters.", show_default=False),
    ] = None,
    coldkey_seed_file: Annotated[
        Path | None,
        typer.Option(
            "--coldkey-seed-file", help="Read the coldkey seed from this file.", show_default=False
        ),
    ] = None,
    hotkey_seed_file: Annotated[
        Path | None,
        typer.Option(
            "--hotkey-seed-file", help="Read the hotkey seed from this file.", show_default=False
        ),
    ] = None,
    root: RootOption = None,
    password_file: PasswordFileOption = None,
    hotkey_password_file: HotkeyPasswordFileOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Store existing keys, given as 32-byte hex seeds, as an encrypted wallet.

    Each seed comes from --coldkey-seed / --hotkey-seed, or from a file
    (64 hex characters) with --coldkey-seed-file / --hotkey-seed-file.
    Prefer the files: a seed typed on the command line stays in your shell history.

    Example:

        agora wallet import bob --coldkey-seed-file c.hex --hotkey-seed-file h.hex
    """
    with _errors_as_one_line():
        cold = _seed_argument(coldkey_seed, coldkey_seed_file, "coldkey")
        hot = _seed_argument(hotkey_seed, hotkey_seed_file, "hotkey")
        password = _password(password_file, confirm=True)
        wallet = Wallet.import_(
            name,
            cold,
            hot,
            password,
            root,
            hotkey_password=_hotkey_password(hotkey_password_file),
            overwrite=overwrite,
        )
    _console().print(_wallet_table(wallet, f"Imported wallet {name}"))


def _seed_argument(seed: str | None, seed_file: Path | None, which: str) -> str:
    if seed is not None and seed_file is not None:
        raise InvalidSeed(f"give the {which} seed once: --{which}-seed or --{which}-seed-file")
    if seed_file is not None:
        return _read_seed_file(seed_file, which)
    if seed is None:
        raise InvalidSeed(f"missing the {which} seed: pass --{which}-seed-file FILE")
    return seed


@app.command("list")
def list_(root: RootOption = None) -> None:
    """List the wallets under the data directory with their addresses.

    Needs no password: addresses are stored in clear.

    Example:

        agora wallet list --root ./devnet
    """
    with _errors_as_one_line():
        wallets, problems = scan_wallets(root)
    for name, problem in problems.items():
        typer.echo(f"warning: skipped wallet {name!r}: {problem}", err=True)
    if not wallets:
        typer.echo(
            f"No wallets in {wallets_dir(root)}. Create one with: agora wallet new NAME", err=True
        )
        return
    table = Table(title=f"Wallets in {wallets_dir(root)}")
    table.add_column("name", style="bold")
    table.add_column("coldkey", overflow="fold")
    table.add_column("hotkey", overflow="fold")
    for wallet in wallets:
        table.add_row(wallet.name, wallet.coldkey_address, wallet.hotkey_address)
    _console().print(table)


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Wallet name.")],
    root: RootOption = None,
) -> None:
    """Show a wallet's addresses, key files and encryption settings.

    Needs no password: addresses are stored in clear.

    Example:

        agora wallet show alice
    """
    with _errors_as_one_line():
        wallet = Wallet.load(name, root)
    table = _wallet_table(wallet, f"Wallet {name}")
    table.add_row("coldkey encryption", _kdf_text(wallet.coldkey_file))
    table.add_row("hotkey encryption", _kdf_text(wallet.hotkey_file))
    _console().print(table)
    for path in (wallet.coldkey_path, wallet.hotkey_path):
        if _loose_permissions(path):
            typer.echo(
                f"warning: {path} is readable by other users; run: chmod 600 {path}", err=True
            )
