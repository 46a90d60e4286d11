"""proxyd-admin as a subprocess against a real store; passwords."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from proxyd.admin import main
from proxyd.passwords import hash_password, verify_password
from proxyd.store import journal as J
from proxyd.store import ledger as L
from proxyd.store.embedded import ping_blocking, socket_path_for
from tests.conftemplate import config_text
from tests.valkey_fixture import valkey_socket  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


def admin(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "proxyd.admin", *args], input=stdin,
                          capture_output=True, text=True, cwd=str(ROOT), env=env,
                          timeout=120)


def write_config(tmp_path: Path, store: dict) -> str:
    path = tmp_path / "proxyd.toml"
    path.write_text(config_text(store=store, account={"password": "secret", "service_codes": None},
                                accounts=[{"system_id": "beta", "password": "secret", "price": 7}]))
    return str(path)


@pytest.fixture
def embedded_config(tmp_path: Path) -> str:
    return write_config(tmp_path, {"dir": tmp_path / "store", "appendfsync": "always"})


def test_embedded_round_trip(embedded_config: str, tmp_path: Path) -> None:
    sock = socket_path_for(str(tmp_path / "store"))
    r = admin("--config", embedded_config, "topup", "acme", "100")
    assert (r.returncode, r.stdout, r.stderr) == (0, "100\n", "")
    # each command started and stopped its own server; the data is in the AOF
    assert not ping_blocking(sock)
    r = admin("--config", embedded_config, "topup", "acme", "50", "--note", "年费 invoice 7")
    assert (r.returncode, r.stdout) == (0, "150\n")
    assert admin("--config", embedded_config, "balance", "acme").stdout == "150\n"
    assert admin("--config", embedded_config, "balance", "beta").stdout == "0\n"
    r = admin("--config", embedded_config, "ledger", "acme")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].split("\t")[1:4] == ["topup", "100", "balance=100"]
    assert lines[1].split("\t")[1:] == ["topup", "50", "balance=150", "", "年费 invoice 7"]
    r = admin("--config", embedded_config, "ledger", "acme", "--limit", "1")
    assert len(r.stdout.splitlines()) == 1 and "balance=150" in r.stdout
    r = admin("--config", embedded_config, "adjust", "acme", "-200", "--note", "x")
    assert r.returncode == 1 and "negative" in r.stderr
    r = admin("--config", embedded_config, "adjust", "acme", "-20", "--note", "correction")
    assert (r.returncode, r.stdout) == (0, "130\n")
    r = admin("--config", embedded_config, "refund-all", "acme", "--note", "contract ended")
    assert (r.returncode, r.stdout) == (0, "130\n")
    assert admin("--config", embedded_config, "balance", "acme").stdout == "0\n"
    last = admin("--config", embedded_config, "ledger", "acme").stdout.splitlines()[-1]
    assert last.split("\t")[1:] == ["refund_all", "130", "balance=0", "", "contract ended"]
    assert not ping_blocking(sock)


def test_against_running_server(valkey_socket: str, tmp_path: Path) -> None:
    import valkey

    cfg = write_config(tmp_path, {"url": "unix://%s" % valkey_socket})
    client = valkey.Valkey(unix_socket_path=valkey_socket, decode_responses=True)
    day = L.day_of(__import__("time").time())
    client.delete(L.balance_key("acme"), L.jhead_key("acme"), L.journal_key("acme", day))
    r = admin("--config", cfg, "topup", "acme", "300", "--note", "via admin")
    assert (r.returncode, r.stdout) == (0, "300\n")
    assert client.get(L.balance_key("acme")) == "300"
    assert admin("--config", cfg, "balance", "acme").stdout == "300\n"
    assert ping_blocking(valkey_socket)  # the admin did not stop a server it did not start
    # its journal records chain like the daemon's
    r = admin("--config", cfg, "topup", "acme", "5", "--note", "via admin")
    assert (r.returncode, r.stdout) == (0, "305\n")
    records = J.records_from_stream(client.xrange(L.journal_key("acme", day)), "acme", day)
    assert [(x.event, x.amount, x.balance_after, x.note) for x in records] == [
        ("topup", 300, 300, "via admin"), ("topup", 5, 305, "via admin")]
    assert L.verify_journal(records, "acme", client.hget(L.jhead_key("acme"), day))


def test_hash_password_round_trip() -> None:
    r = admin("hash-password", stdin="s3cret pass\n")
    assert r.returncode == 0, r.stderr
    stored = r.stdout.strip()
    assert stored.startswith("scrypt$16384$8$1$")
    assert verify_password(stored, "s3cret pass")
    assert not verify_password(stored, "s3cret pas")
    r = admin("hash-password", stdin="\n")
    assert r.returncode == 2 and "empty" in r.stderr


@pytest.mark.parametrize("args, message", [
    ((), "required"),
    (("frobnicate",), "invalid choice"),
    (("topup", "acme"), "required"),
    (("topup", "acme", "abc"), "integer"),
    (("topup", "acme", "0"), "> 0"),
    (("topup", "acme", "1.5"), "integer"),
    (("topup", "nobody", "10"), "unknown account 'nobody'"),
    (("balance", "nobody"), "unknown account"),
    (("refund-all", "acme"), "--note"),
    (("ledger", "acme", "--limit", "-1"), "> 0"),
])
def test_bad_arguments_exit_2(embedded_config: str, args: tuple, message: str,
                              capsys: pytest.CaptureFixture) -> None:
    assert main(["--config", embedded_config, *args]) == 2
    err = capsys.readouterr().err
    assert message in err


def test_bad_config_exit_2(tmp_path: Path) -> None:
    r = admin("--config", str(tmp_path / "missing.toml"), "balance", "acme")
    assert r.returncode == 2 and "not found" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[store]\nappendfsync = "sometimes"\n')
    r = admin("--config", str(bad), "balance", "acme")
    assert r.returncode == 2 and "store.appendfsync" in r.stderr
    r = admin("--config", str(tmp_path / "missing.toml"), "topup", "acme", "x")
    assert r.returncode == 2


def test_store_down_exit_1(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"url": "unix://%s" % (tmp_path / "nothing.sock"),
                                  "timeout_s": 0.5})
    r = admin("--config", cfg, "balance", "acme")
    assert r.returncode == 1 and "unavailable" in r.stderr


# --- passwords -------------------------------------------------------------------------------

def test_hash_format_and_salt() -> None:
    a, b = hash_password("pw"), hash_password("pw")
    assert a != b  # random salt
    parts = a.split("$")
    assert parts[:4] == ["scrypt", "16384", "8", "1"] and len(parts) == 6
    assert verify_password(a, "pw") and verify_password(b, "pw")
    assert not verify_password(a, "") and not verify_password(a, "PW")


def test_plain_text_and_malformed() -> None:
    assert verify_password("secret", "secret")
    assert not verify_password("secret", "secret ")
    assert not verify_password("secret", "")
    assert verify_password("", "")  # plain text, compared as such
    assert not verify_password("scrypt$nonsense", "scrypt$nonsense")
    assert not verify_password("scrypt$16384$8$1$!!$!!", "x")
    assert not verify_password("scrypt$3$8$1$AAAA$AAAA", "x")  # n not a power of two
    h = hash_password("日本語パスワード")
    assert verify_password(h, "日本語パスワード")
    assert not verify_password(h.replace("scrypt$16384", "scrypt$8192"), "日本語パスワード")


def test_account_keys_share_one_hash_tag() -> None:
    a, b = "x" + uuid.uuid4().hex, "y" + uuid.uuid4().hex
    keys = L.account_keys(a, "20260101")
    assert all("{%s}" % a in k for k in keys) and len(set(keys)) == len(keys)
    assert set(keys).isdisjoint(L.account_keys(b, "20260101"))
