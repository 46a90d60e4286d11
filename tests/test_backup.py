"""proxyd-admin backup and restore: a snapshot of the embedded store, and the restore of
docs/OPERATIONS.md giving the balances back as they were at the snapshot. Real
valkey-server (started by each proxyd-admin command for its duration, as when no node
runs); the commands run in this process (`proxyd.admin.main`)."""
from __future__ import annotations

import pytest

from proxyd.admin import main
from proxyd.store.embedded import start_blocking

from .conftemplate import config_text
from .procs import write_config


@pytest.fixture
def admin(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)

    def run(cfg, *args, status=0):
        code = main(["--config", str(cfg), *args])
        out, err = capsys.readouterr()
        assert code == status, (code, out, err)
        return out.strip() if status == 0 else err
    return run


def test_backup_and_restore(tmp_path, admin):
    store = tmp_path / "store"
    cfg = write_config(tmp_path, config_text(None, None, store={"dir": str(store)}))
    admin(cfg, "topup", "acme", "100")
    snap = tmp_path / "backup" / "proxyd.rdb"
    snap.parent.mkdir()
    out = admin(cfg, "backup", str(snap))
    assert out.startswith("wrote %s (" % snap) and str(store) in out
    assert snap.stat().st_size > 0 and not (snap.parent / "proxyd.rdb.part").exists()
    admin(cfg, "topup", "acme", "50")
    assert admin(cfg, "balance", "acme") == "150"
    # restore (the store is stopped: each command stopped the one it started)
    out = admin(cfg, "restore", str(snap))
    assert out.startswith("restored ") and "before-restore" in out
    assert not (store / "dump.rdb").exists()
    assert len(list(store.glob("appendonlydir.before-restore-*"))) == 1
    assert admin(cfg, "balance", "acme") == "100"
    # the restored store keeps what comes after, in its new append-only file
    admin(cfg, "topup", "acme", "1")
    assert admin(cfg, "balance", "acme") == "101"
    # a damaged snapshot changes nothing
    bad = tmp_path / "bad.rdb"
    bad.write_bytes(b"not a snapshot")
    assert "did not start on the snapshot" in admin(cfg, "restore", str(bad), status=1)
    assert admin(cfg, "balance", "acme") == "101"


def test_backup_errors(tmp_path, admin):
    cfg = write_config(tmp_path, config_text(None, None, store={"url": "none"}))
    assert "no store to back up" in admin(cfg, "backup", str(tmp_path / "x.rdb"), status=2)
    assert "embedded store only" in admin(cfg, "restore", str(tmp_path / "x.rdb"), status=2)
    cfg = write_config(tmp_path, config_text(None, None, store={"dir": str(tmp_path / "s")}),
                       name="b.toml")
    assert "cannot write" in admin(cfg, "backup", str(tmp_path / "no" / "dir.rdb"), status=1)
    # never under a running store (a node's): refused, nothing moved
    snap = tmp_path / "ok.rdb"
    admin(cfg, "backup", str(snap))
    _path, stop = start_blocking(str(tmp_path / "s"))
    try:
        assert "stop every proxyd node" in admin(cfg, "restore", str(snap), status=1)
        assert (tmp_path / "s" / "appendonlydir").is_dir()
    finally:
        stop()
