"""Wallets and key files: encryption at rest, damage detection, the on-disk layout, the CLI."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agora.crypto.keys import Keypair
from agora.protocol.codec import canonical_bytes, sha256_hex
from agora.protocol.errors import AgoraError
from agora.wallet import (
    DEFAULT_KDF,
    KDF_FOR_TESTS_ONLY,
    CorruptKeyFile,
    EmptyPassword,
    InvalidSeed,
    InvalidWalletName,
    PasswordUnavailable,
    Wallet,
    WalletError,
    WalletExists,
    WalletNotFound,
    WrongPassword,
    list_wallets,
    resolve_password,
    resolve_root,
    scan_wallets,
)
from agora.wallet import keyfile as keyfile_module
from agora.wallet.cli import app

FAST = KDF_FOR_TESTS_ONLY
PASSWORD = "correct horse battery staple"
COLD_SEED = "11" * 32
HOT_SEED = "22" * 32


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGORA_HOME", raising=False)
    monkeypatch.delenv("AGORA_PASSWORD", raising=False)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "agora-home"


def make(root: Path, name: str = "alice", **kwargs: object) -> Wallet:
    return Wallet.create(name, PASSWORD, root, kdf=FAST, **kwargs)  # type: ignore[arg-type]


def rewrite(path: Path, change: object) -> None:
    """Edit a key file's JSON with ``change(document)`` and fix its checksum, as an attacker
    (rather than a failing disk) would."""
    document = json.loads(path.read_text())
    change(document)  # type: ignore[operator]
    body = {k: v for k, v in document.items() if k != "checksum"}
    document["checksum"] = sha256_hex(canonical_bytes(body))
    path.write_text(json.dumps(document))


# -- round trips ---------------------------------------------------------------------------------


def test_create_load_and_decrypt(root: Path) -> None:
    created = make(root)
    loaded = Wallet.load("alice", root)
    assert loaded.coldkey_address == created.coldkey_address
    assert loaded.hotkey_address == created.hotkey_address
    assert loaded.coldkey_address != loaded.hotkey_address
    assert loaded.coldkey(PASSWORD).address == loaded.coldkey_address
    assert loaded.hotkey(PASSWORD).address == loaded.hotkey_address
    assert loaded.path == root / "wallets" / "alice"
    assert loaded.coldkey_path == root / "wallets" / "alice" / "coldkey.json"
    assert loaded.hotkey_path == root / "wallets" / "alice" / "hotkey.json"


def test_the_decrypted_key_signs(root: Path) -> None:
    wallet = make(root)
    key = wallet.hotkey(PASSWORD)
    from agora.crypto.keys import verify

    signature = key.sign_message(b"agora/test", {"x": 1})
    assert verify(wallet.hotkey_address, b"agora/test", {"x": 1}, signature)


def test_a_separate_hotkey_password(root: Path) -> None:
    wallet = make(root, hotkey_password="hot password")
    assert wallet.coldkey(PASSWORD).address == wallet.coldkey_address
    assert wallet.hotkey("hot password").address == wallet.hotkey_address
    with pytest.raises(WrongPassword):
        wallet.hotkey(PASSWORD)


def test_file_records_kdf_and_format(root: Path) -> None:
    wallet = make(root)
    document = json.loads(wallet.coldkey_path.read_text())
    assert document["version"] == 1
    assert document["kind"] == "coldkey"
    assert document["address"] == wallet.coldkey_address
    assert document["kdf"]["name"] == "argon2id"
    assert document["kdf"]["opslimit"] == FAST.opslimit
    assert document["kdf"]["memlimit"] == FAST.memlimit
    assert len(document["kdf"]["salt"]) == 32
    assert document["cipher"]["name"] == "xsalsa20-poly1305"
    assert len(document["cipher"]["nonce"]) == 48
    assert len(document["cipher"]["ciphertext"]) == 96


def test_default_kdf_is_libsodium_moderate() -> None:
    import nacl.pwhash.argon2id as argon2id

    assert DEFAULT_KDF.opslimit == argon2id.OPSLIMIT_MODERATE
    assert DEFAULT_KDF.memlimit == argon2id.MEMLIMIT_MODERATE


def test_salts_and_nonces_are_fresh(root: Path) -> None:
    a = Wallet.import_("a", COLD_SEED, HOT_SEED, PASSWORD, root, kdf=FAST)
    b = Wallet.import_("b", COLD_SEED, HOT_SEED, PASSWORD, root, kdf=FAST)
    doc_a = json.loads(a.coldkey_path.read_text())
    doc_b = json.loads(b.coldkey_path.read_text())
    assert doc_a["kdf"]["salt"] != doc_b["kdf"]["salt"]
    assert doc_a["cipher"]["ciphertext"] != doc_b["cipher"]["ciphertext"]


# -- passwords -----------------------------------------------------------------------------------


def test_wrong_password(root: Path) -> None:
    wallet = make(root)
    with pytest.raises(WrongPassword) as caught:
        wallet.coldkey("not the password")
    assert str(wallet.coldkey_path) in str(caught.value)
    assert "not the password" not in str(caught.value)
    with pytest.raises(WrongPassword):
        wallet.hotkey("")


def test_empty_password_is_refused(root: Path) -> None:
    with pytest.raises(EmptyPassword):
        Wallet.create("alice", "", root, kdf=FAST)
    with pytest.raises(EmptyPassword):
        Wallet.create("alice", PASSWORD, root, hotkey_password="", kdf=FAST)
    assert not (root / "wallets" / "alice").exists()


def test_password_unicode_normalization(root: Path) -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    wallet = Wallet.create("alice", composed, root, kdf=FAST)
    assert wallet.coldkey(decomposed).address == wallet.coldkey_address


# -- damaged files -------------------------------------------------------------------------------


def test_truncated_file(root: Path) -> None:
    wallet = make(root)
    data = wallet.coldkey_path.read_bytes()
    for length in [0, 1, len(data) // 3, len(data) // 2, len(data) - 5]:
        wallet.coldkey_path.write_bytes(data[:length])
        with pytest.raises(CorruptKeyFile) as caught:
            Wallet.load("alice", root)
        assert caught.value.path == wallet.coldkey_path
        assert str(wallet.coldkey_path) in str(caught.value)


def test_corrupted_ciphertext(root: Path) -> None:
    wallet = make(root)
    text = wallet.coldkey_path.read_text()
    ciphertext = json.loads(text)["cipher"]["ciphertext"]
    flipped = ("0" if ciphertext[10] != "0" else "1").join([ciphertext[:10], ciphertext[11:]])
    wallet.coldkey_path.write_text(text.replace(ciphertext, flipped))
    with pytest.raises(CorruptKeyFile, match="checksum"):
        Wallet.load("alice", root)


def test_tampered_ciphertext_with_a_fixed_checksum_still_fails(root: Path) -> None:
    wallet = make(root)

    def flip(document: dict[str, dict[str, str]]) -> None:
        c = document["cipher"]["ciphertext"]
        document["cipher"]["ciphertext"] = ("0" if c[0] != "0" else "1") + c[1:]

    rewrite(wallet.coldkey_path, flip)
    # The authentication tag cannot tell tampering from a wrong password; it does refuse.
    with pytest.raises(WrongPassword):
        Wallet.load("alice", root).coldkey(PASSWORD)


def test_a_swapped_clear_address_is_refused(root: Path) -> None:
    wallet = make(root)
    rewrite(wallet.coldkey_path, lambda d: d.update(address=Keypair.from_name("eve").address))
    tampered = Wallet.load("alice", root)
    assert tampered.coldkey_address == Keypair.from_name("eve").address
    with pytest.raises(CorruptKeyFile, match="does not match"):
        tampered.coldkey(PASSWORD)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.update(version=2), "version"),
        (lambda d: d.update(kind="warmkey"), "kind"),
        (lambda d: d.update(address="AB" * 32), "address"),
        (lambda d: d["kdf"].update(name="scrypt"), "kdf"),
        (lambda d: d["kdf"].update(memlimit=2**50), "out of range"),
        (lambda d: d["kdf"].update(opslimit=True), "integer"),
        (lambda d: d["kdf"].update(salt="00"), "salt"),
        (lambda d: d["cipher"].update(nonce="zz" * 24), "nonce"),
        (lambda d: d["cipher"].update(ciphertext="00" * 10), "ciphertext"),
        (lambda d: d.pop("cipher"), "cipher"),
    ],
)
def test_malformed_fields(root: Path, change: object, reason: str) -> None:
    wallet = make(root)
    rewrite(wallet.coldkey_path, change)
    with pytest.raises(CorruptKeyFile, match=reason):
        Wallet.load("alice", root)


def test_not_json_at_all(root: Path) -> None:
    wallet = make(root)
    wallet.hotkey_path.write_bytes(b"\xff\xfe garbage")
    with pytest.raises(CorruptKeyFile) as caught:
        Wallet.load("alice", root)
    assert caught.value.path == wallet.hotkey_path
    wallet.hotkey_path.write_text("[1, 2, 3]")
    with pytest.raises(CorruptKeyFile, match="not a JSON object"):
        Wallet.load("alice", root)


def test_swapped_key_files_are_refused(root: Path) -> None:
    wallet = make(root)
    wallet.coldkey_path.write_bytes(wallet.hotkey_path.read_bytes())
    with pytest.raises(CorruptKeyFile, match="expected a coldkey"):
        Wallet.load("alice", root)


def test_an_oversized_file_is_refused(root: Path) -> None:
    wallet = make(root)
    wallet.coldkey_path.write_bytes(b" " * (1024 * 1024))
    with pytest.raises(CorruptKeyFile, match="larger than"):
        Wallet.load("alice", root)


# -- the disk ------------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_file_and_directory_permissions(root: Path) -> None:
    wallet = make(root)
    assert mode(wallet.coldkey_path) == 0o600
    assert mode(wallet.hotkey_path) == 0o600
    assert mode(wallet.path) == 0o700
    assert mode(root / "wallets") == 0o700
    assert mode(root) == 0o700


def test_permissions_hold_under_a_permissive_umask(root: Path) -> None:
    old = os.umask(0)
    try:
        wallet = make(root)
    finally:
        os.umask(old)
    assert mode(wallet.coldkey_path) == 0o600
    assert mode(wallet.path) == 0o700


def test_no_seed_in_the_files(root: Path) -> None:
    wallet = Wallet.import_("alice", COLD_SEED, HOT_SEED, PASSWORD, root, kdf=FAST)
    for path in (wallet.coldkey_path, wallet.hotkey_path):
        data = path.read_bytes()
        for seed_hex in (COLD_SEED, HOT_SEED):
            assert seed_hex.encode() not in data
            assert seed_hex.upper().encode() not in data
            assert bytes.fromhex(seed_hex) not in data
        assert PASSWORD.encode() not in data
    assert COLD_SEED not in repr(wallet) and COLD_SEED not in repr(wallet.coldkey(PASSWORD))


def test_no_temporary_files_are_left(root: Path) -> None:
    wallet = make(root)
    assert sorted(p.name for p in wallet.path.iterdir()) == ["coldkey.json", "hotkey.json"]


def test_refuses_to_overwrite(root: Path) -> None:
    first = make(root)
    before = first.coldkey_path.read_bytes(), first.hotkey_path.read_bytes()
    with pytest.raises(WalletExists, match="already exists"):
        make(root)
    with pytest.raises(WalletExists):
        Wallet.import_("alice", COLD_SEED, HOT_SEED, PASSWORD, root, kdf=FAST)
    with pytest.raises(WalletExists):
        Wallet.create_dev("alice", root, PASSWORD, kdf=FAST)
    assert (first.coldkey_path.read_bytes(), first.hotkey_path.read_bytes()) == before


def test_refuses_even_when_only_one_file_is_left(root: Path) -> None:
    first = make(root)
    first.hotkey_path.unlink()
    with pytest.raises(WalletExists):
        make(root)


def test_overwrite_when_asked(root: Path) -> None:
    first = make(root)
    second = make(root, overwrite=True)
    assert second.coldkey_address != first.coldkey_address
    assert Wallet.load("alice", root).coldkey_address == second.coldkey_address


def test_a_failed_hotkey_write_leaves_no_half_wallet(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = keyfile_module.atomic_write

    def fail_on_hotkey(path: Path, data: bytes, *, overwrite: bool = False) -> None:
        if path.name == "hotkey.json":
            raise OSError(28, "No space left on device", str(path))
        real(path, data, overwrite=overwrite)

    monkeypatch.setattr("agora.wallet.wallet.atomic_write", fail_on_hotkey)
    with pytest.raises(OSError):
        make(root)
    assert not (root / "wallets" / "alice" / "coldkey.json").exists()


def test_atomic_write_refuses_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    keyfile_module.atomic_write(target, b"one")
    with pytest.raises(FileExistsError):
        keyfile_module.atomic_write(target, b"two")
    assert target.read_bytes() == b"one"
    keyfile_module.atomic_write(target, b"three", overwrite=True)
    assert target.read_bytes() == b"three"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


# -- import, dev keys, names, listing -------------------------------------------------------------


def test_import(root: Path) -> None:
    wallet = Wallet.import_("bob", COLD_SEED, HOT_SEED, PASSWORD, root, kdf=FAST)
    assert wallet.coldkey_address == Keypair.from_seed_hex(COLD_SEED).address
    assert wallet.hotkey_address == Keypair.from_seed_hex(HOT_SEED).address
    assert wallet.coldkey(PASSWORD).seed == bytes.fromhex(COLD_SEED)


def test_import_accepts_0x_and_uppercase(root: Path) -> None:
    wallet = Wallet.import_(
        "bob", "0x" + COLD_SEED.upper(), f"  {HOT_SEED}\n", PASSWORD, root, kdf=FAST
    )
    assert wallet.coldkey_address == Keypair.from_seed_hex(COLD_SEED).address


@pytest.mark.parametrize("bad", ["", "12", "11" * 31, "11" * 33, "zz" * 32, "11" * 31 + "g1"])
def test_import_refuses_bad_seeds_without_echoing_them(root: Path, bad: str) -> None:
    with pytest.raises(InvalidSeed) as caught:
        Wallet.import_("bob", bad, HOT_SEED, PASSWORD, root, kdf=FAST)
    if bad:
        assert bad not in str(caught.value)
    assert not (root / "wallets" / "bob").exists()


def test_create_dev_uses_the_well_known_keys(root: Path) -> None:
    wallet = Wallet.create_dev("alice", root, "dev", kdf=FAST)
    assert wallet.coldkey_address == Keypair.from_name("alice").address
    assert wallet.hotkey_address == Keypair.from_name("alice/hot").address
    assert wallet.hotkey("dev") == Keypair.from_name("alice/hot")


@pytest.mark.parametrize("name", ["", ".", "..", "../evil", "a/b", ".hidden", "-x", "a" * 65, "é"])
def test_invalid_names(root: Path, name: str) -> None:
    with pytest.raises(InvalidWalletName):
        Wallet.create(name, PASSWORD, root, kdf=FAST)
    with pytest.raises(InvalidWalletName):
        Wallet.load(name, root)


def test_load_missing(root: Path) -> None:
    with pytest.raises(WalletNotFound, match="agora wallet new nobody"):
        Wallet.load("nobody", root)
    wallet = make(root)
    wallet.hotkey_path.unlink()
    with pytest.raises(WalletNotFound, match="no hotkey file"):
        Wallet.load("alice", root)


def test_list(root: Path) -> None:
    assert list_wallets(root) == []
    make(root, "zed")
    make(root, "alice")
    Wallet.create_dev("bob", root, "dev", kdf=FAST)
    wallets = list_wallets(root)
    assert [w.name for w in wallets] == ["alice", "bob", "zed"]
    assert wallets[1].coldkey_address == Keypair.from_name("bob").address


def test_scan_reports_broken_wallets_and_list_skips_them(root: Path) -> None:
    make(root, "alice")
    broken = make(root, "broken")
    broken.coldkey_path.write_text("{")
    (root / "wallets" / "empty-dir").mkdir()
    (root / "wallets" / "stray-file.txt").write_text("x")
    wallets, problems = scan_wallets(root)
    assert [w.name for w in wallets] == ["alice"]
    assert set(problems) == {"broken", "empty-dir"}
    assert isinstance(problems["broken"], CorruptKeyFile)
    assert isinstance(problems["empty-dir"], WalletNotFound)
    assert [w.name for w in list_wallets(root)] == ["alice"]


def test_root_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_root() == tmp_path / "home" / ".agora"
    monkeypatch.setenv("AGORA_HOME", str(tmp_path / "env"))
    assert resolve_root() == tmp_path / "env"
    assert resolve_root(tmp_path / "arg") == tmp_path / "arg"
    wallet = Wallet.create("alice", PASSWORD, kdf=FAST)
    assert wallet.path == tmp_path / "env" / "wallets" / "alice"
    assert [w.name for w in list_wallets()] == ["alice"]


def test_errors_belong_to_the_tree() -> None:
    for error in (
        WrongPassword,
        CorruptKeyFile,
        WalletExists,
        WalletNotFound,
        InvalidSeed,
        InvalidWalletName,
        EmptyPassword,
        PasswordUnavailable,
    ):
        assert issubclass(error, WalletError)
        assert issubclass(error, AgoraError)
    assert WrongPassword("x").code == "wrong_password"
    assert CorruptKeyFile("/x", "y").code == "corrupt_key_file"


# -- resolve_password ----------------------------------------------------------------------------


def test_password_from_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGORA_PASSWORD", "from env")
    secret = tmp_path / "pw"
    secret.write_text("  spaced pass  \r\n")
    assert resolve_password(str(secret), prompt=False, confirm=False) == "  spaced pass  "


def test_password_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGORA_PASSWORD", "from env")
    assert resolve_password(None, prompt=False, confirm=False) == "from env"


def test_password_file_problems(tmp_path: Path) -> None:
    with pytest.raises(PasswordUnavailable, match="cannot read password file"):
        resolve_password(str(tmp_path / "missing"), prompt=True, confirm=False)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(EmptyPassword):
        resolve_password(str(empty), prompt=True, confirm=False)


def test_no_password_source(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PasswordUnavailable, match="--password-file"):
        resolve_password(None, prompt=False, confirm=False)


def test_password_prompt(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["typed", "typed"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert resolve_password(None, prompt=True, confirm=True) == "typed"


def test_password_prompt_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["typed", "typo"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    with pytest.raises(PasswordUnavailable, match="differ"):
        resolve_password(None, prompt=True, confirm=True)


def test_password_prompt_without_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_terminal(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr("getpass.getpass", no_terminal)
    with pytest.raises(PasswordUnavailable):
        resolve_password(None, prompt=True, confirm=False)


# -- the CLI -------------------------------------------------------------------------------------


@pytest.fixture
def cli(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setattr(keyfile_module, "DEFAULT_KDF", FAST)
    monkeypatch.setenv("AGORA_HOME", str(root))

    def no_terminal(prompt: str = "") -> str:  # a test must never wait on a prompt
        raise EOFError

    monkeypatch.setattr("getpass.getpass", no_terminal)
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    return CliRunner()


def assert_one_line_error(output: str) -> None:
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("error: ")
    assert "Traceback" not in output


def test_cli_new_list_show(cli: CliRunner, root: Path, tmp_path: Path) -> None:
    pw = str(tmp_path / "pw")
    result = cli.invoke(app, ["new", "alice", "--password-file", pw])
    assert result.exit_code == 0, result.output
    wallet = Wallet.load("alice", root)
    assert wallet.coldkey_address in result.stdout
    assert wallet.hotkey_address in result.stdout
    assert wallet.coldkey(PASSWORD).address == wallet.coldkey_address

    result = cli.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    assert "alice" in result.stdout and wallet.coldkey_address in result.stdout

    result = cli.invoke(app, ["show", "alice"])
    assert result.exit_code == 0, result.output
    assert wallet.hotkey_address in result.stdout and "argon2id" in result.stdout
    assert result.stderr == ""


def test_cli_new_with_password_from_env(
    cli: CliRunner, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGORA_PASSWORD", "env password")
    result = cli.invoke(app, ["new", "carol"])
    assert result.exit_code == 0, result.output
    Wallet.load("carol", root).coldkey("env password")


def test_cli_root_option_wins_over_env(cli: CliRunner, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    result = cli.invoke(
        app, ["new", "dave", "--root", str(other), "--password-file", str(tmp_path / "pw")]
    )
    assert result.exit_code == 0, result.output
    assert Wallet.load("dave", other).name == "dave"


def test_cli_refuses_overwrite_with_one_line(cli: CliRunner, tmp_path: Path) -> None:
    pw = str(tmp_path / "pw")
    assert cli.invoke(app, ["new", "alice", "--password-file", pw]).exit_code == 0
    result = cli.invoke(app, ["new", "alice", "--password-file", pw])
    assert result.exit_code == 1
    assert_one_line_error(result.stderr)
    assert "already exists" in result.stderr
    assert cli.invoke(app, ["new", "alice", "--password-file", pw, "--overwrite"]).exit_code == 0


def test_cli_import_from_files_and_flags(cli: CliRunner, root: Path, tmp_path: Path) -> None:
    pw = str(tmp_path / "pw")
    (tmp_path / "cold.hex").write_text(COLD_SEED + "\n")
    (tmp_path / "hot.hex").write_text(HOT_SEED + "\n")
    result = cli.invoke(
        app,
        [
            "import",
            "bob",
            "--coldkey-seed-file",
            str(tmp_path / "cold.hex"),
            "--hotkey-seed-file",
            str(tmp_path / "hot.hex"),
            "--password-file",
            pw,
        ],
    )
    assert result.exit_code == 0, result.output
    assert Keypair.from_seed_hex(COLD_SEED).address in result.stdout
    assert COLD_SEED not in result.output
    assert Wallet.load("bob", root).hotkey(PASSWORD).seed == bytes.fromhex(HOT_SEED)

    result = cli.invoke(
        app,
        [
            "import",
            "eve",
            "--coldkey-seed",
            COLD_SEED,
            "--hotkey-seed",
            HOT_SEED,
            "--password-file",
            pw,
        ],
    )
    assert result.exit_code == 0, result.output
    assert Wallet.load("eve", root).coldkey_address == Keypair.from_seed_hex(COLD_SEED).address


def test_cli_import_errors(cli: CliRunner, tmp_path: Path) -> None:
    pw = str(tmp_path / "pw")
    result = cli.invoke(
        app,
        [
            "import",
            "bob",
            "--coldkey-seed",
            "abc",
            "--hotkey-seed",
            HOT_SEED,
            "--password-file",
            pw,
        ],
    )
    assert result.exit_code == 1
    assert_one_line_error(result.stderr)
    assert "64 hex" in result.stderr

    result = cli.invoke(app, ["import", "bob", "--coldkey-seed", COLD_SEED, "--password-file", pw])
    assert result.exit_code == 1
    assert_one_line_error(result.stderr)
    assert "hotkey" in result.stderr

    missing = str(tmp_path / "missing.hex")
    result = cli.invoke(
        app,
        [
            "import",
            "bob",
            "--coldkey-seed-file",
            missing,
            "--hotkey-seed",
            HOT_SEED,
            "--password-file",
            pw,
        ],
    )
    assert result.exit_code == 1
    assert_one_line_error(result.stderr)


def test_cli_errors_are_one_line(cli: CliRunner, root: Path, tmp_path: Path) -> None:
    result = cli.invoke(app, ["show", "nobody"])
    assert result.exit_code == 1
    assert_one_line_error(result.stderr)
    assert "agora wallet new nobody" in result.stderr

    result = cli.invoke(app, ["new", "alice"])  # no password file, no env, no terminal
    assert result.exit_code == 1
    assert_one_line_error(result.stderr)
    assert "--password-file" in result.stderr

    result = cli.invoke(app, ["new", "../evil", "--password-file", str(tmp_path / "pw")])
    assert result.exit_code == 1
    assert_one_line_error(result.stderr)

    result = cli.invoke(app, ["new", "alice", "--password-file", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert_one_line_error(result.stderr)

    make(root, "broken").coldkey_path.write_text("{")
    result = cli.invoke(app, ["show", "broken"])
    assert result.exit_code == 1
    assert_one_line_error(result.stderr)
    assert "coldkey.json" in result.stderr


def test_cli_list_empty_and_broken(cli: CliRunner, root: Path) -> None:
    result = cli.invoke(app, ["list"])
    assert result.exit_code == 0
    assert "agora wallet new" in result.output

    make(root, "alice")
    make(root, "broken").coldkey_path.write_text("{")
    result = cli.invoke(app, ["list"])
    assert result.exit_code == 0
    assert "alice" in result.stdout
    assert "broken" in result.stderr and "warning" in result.stderr


def test_cli_show_warns_about_loose_permissions(cli: CliRunner, root: Path) -> None:
    wallet = make(root)
    wallet.coldkey_path.chmod(0o644)
    result = cli.invoke(app, ["show", "alice"])
    assert result.exit_code == 0
    assert "chmod 600" in result.stderr


@pytest.mark.parametrize("command", ["new", "import", "list", "show"])
def test_cli_help_has_an_example(cli: CliRunner, command: str) -> None:
    result = cli.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output and f"agora wallet {command}" in result.output
