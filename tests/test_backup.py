"""proxyd-admin backup: a snapshot of the embedded store, and the restore of
docs/OPERATIONS.md (move appendonlydir away, the snapshot as dump.rdb) giving the balances
back as they were at the snapshot. Real valkey-server (started by proxyd-admin)."""
from __future__ import annotations

from .conftemplate import config_text
from .procs import admin, write_config


def test_backup_and_restore(tmp_path):
    store = tmp_path / "store"
    cfg = write_config(tmp_path, config_text(None, None, store={"dir": str(store)}))
    admin(tmp_path, cfg, "topup", "acme", "100")
    snap = tmp_path / "backup" / "proxyd.rdb"
    snap.parent.mkdir()
    r = admin(tmp_path, cfg, "backup", str(snap))
    assert r.stdout.startswith("wrote %s (" % snap) and str(store) in r.stdout
    assert snap.stat().st_size > 0 and not (snap.parent / "proxyd.rdb.part").exists()
    admin(tmp_path, cfg, "topup", "acme", "50")
    assert admin(tmp_path, cfg, "balance", "acme").stdout.strip() == "150"
    # restore (the store is stopped: proxyd-admin stopped the one it started)
    r = admin(tmp_path, cfg, "restore", str(snap))
    assert r.stdout.startswith("restored ") and "before-restore" in r.stdout
    assert not (store / "dump.rdb").exists()
    assert len(list(store.glob("appendonlydir.before-restore-*"))) == 1
    assert admin(tmp_path, cfg, "balance", "acme").stdout.strip() == "100"
    # and the restored store keeps what comes after, in its new append-only file
    admin(tmp_path, cfg, "topup", "acme", "1")
    assert admin(tmp_path, cfg, "balance", "acme").stdout.strip() == "101"
    # a damaged snapshot changes nothing
    bad = tmp_path / "bad.rdb"
    bad.write_bytes(b"not a snapshot")
    r = admin(tmp_path, cfg, "restore", str(bad), check=False)
    assert r.returncode == 1 and "did not start on the snapshot" in r.stderr
    assert admin(tmp_path, cfg, "balance", "acme").stdout.strip() == "101"


def test_backup_errors(tmp_path):
    cfg = write_config(tmp_path, config_text(None, None, store={"url": "none"}))
    r = admin(tmp_path, cfg, "backup", str(tmp_path / "x.rdb"), check=False)
    assert r.returncode == 2 and "no store to back up" in r.stderr
    cfg = write_config(tmp_path, config_text(None, None, store={"dir": str(tmp_path / "s")}),
                       name="b.toml")
    r = admin(tmp_path, cfg, "backup", str(tmp_path / "no" / "such" / "dir.rdb"), check=False)
    assert r.returncode == 1 and "cannot write" in r.stderr
