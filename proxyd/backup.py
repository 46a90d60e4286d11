"""`proxyd-admin backup FILE`: a consistent snapshot of the store, copied to FILE.

The store saves a snapshot (BGSAVE: a fork writes the whole dataset at one instant to its
RDB file, while it goes on answering), proxyd-admin waits for it to finish (checking
``INFO persistence``), then copies the file to FILE (written beside it and renamed, so
FILE is whole or absent). The store's own file is taken from ``CONFIG GET dir`` and
``dbfilename``; it must be readable here, as it is for the embedded store (and a
``unix://`` server on this machine). For a server on another machine the snapshot is left
there and named (copy it with that machine's tools).

`proxyd-admin restore FILE` (the embedded store only, every node using it stopped): the
store's ``appendonlydir`` is moved aside (``appendonlydir.before-restore-<time>``), a server
is started on `[store] dir` with the snapshot and append-only persistence off, switched on
(which writes a fresh append-only file holding the whole snapshot), and stopped; the next
start of proxyd finds the restored data. (A store started with append-only persistence on
ignores a snapshot file: that is why a copy into the directory alone restores nothing.)
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Any

from .store import embedded as E

__all__ = ["backup", "restore_embedded", "BackupError"]


class BackupError(Exception):
    pass


def _info(client: Any) -> dict:
    return client.info("persistence")


def backup(client: Any, target: str, timeout_s: float = 300.0,
           poll_s: float = 0.05) -> tuple[str, int]:
    """Snapshot the store of `client` (a synchronous valkey client) into `target`.
    Returns (the store's snapshot path, bytes copied). Raises BackupError."""
    before = _info(client)
    if before.get("rdb_bgsave_in_progress"):
        raise BackupError("a snapshot is being written already; try again when it is done")
    saves = int(before.get("rdb_saves", 0))     # snapshots since the server started
    client.bgsave()
    deadline = time.monotonic() + timeout_s
    while True:
        info = _info(client)
        if not info.get("rdb_bgsave_in_progress") and (
                int(info.get("rdb_saves", 0)) > saves
                or info.get("rdb_last_bgsave_status") != "ok"):
            break
        if time.monotonic() > deadline:
            raise BackupError("the snapshot was not done within %gs" % timeout_s)
        time.sleep(poll_s)
    if info.get("rdb_last_bgsave_status") != "ok":
        raise BackupError("the store failed to write its snapshot (see its log)")
    d = client.config_get("dir").get("dir", "")
    name = client.config_get("dbfilename").get("dbfilename", "dump.rdb")
    src = os.path.join(d, name)
    if not os.path.isfile(src):
        raise BackupError("the snapshot is %s on the store's machine, not readable here: "
                          "copy it from there" % src)
    tmp = target + ".part"
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, target)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise BackupError("cannot write %s: %s" % (target, e)) from None
    return src, os.path.getsize(target)


def restore_embedded(dir: str, snapshot: str, appendfsync: str = "everysec",
                     maxmemory: str = "1gb", timeout_s: float = 300.0) -> tuple[int, str]:
    """Replace the embedded store's data in `dir` with `snapshot` (see the module
    docstring). Returns (keys restored, where the old append-only files went, or "").
    Raises BackupError (nothing changed) when a server runs on `dir` or the snapshot
    cannot be loaded."""
    import valkey

    if not os.path.isfile(snapshot):
        raise BackupError("no such file %s" % snapshot)
    os.makedirs(dir, mode=0o700, exist_ok=True)
    sock = E.socket_path_for(dir)
    fd = E._try_lock(dir)
    if fd is None or E.ping_blocking(sock):
        E._release_lock(fd)
        raise BackupError("a store server runs on %s: stop every proxyd node (and "
                          "proxyd-admin command) using it first" % dir)
    aof = os.path.join(dir, "appendonlydir")
    rdb = os.path.join(dir, "dump.rdb")
    moved = ""
    proc = None
    try:
        if os.path.exists(aof):
            moved = "%s.before-restore-%s" % (aof, time.strftime("%Y%m%d-%H%M%S"))
            os.rename(aof, moved)
        shutil.copyfile(snapshot, rdb)
        args = E.server_args(E.find_server_binary(), dir, appendfsync, maxmemory)
        args[args.index("--appendonly") + 1] = "no"
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, close_fds=True)
        deadline = time.monotonic() + timeout_s
        while not E.ping_blocking(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BackupError("the store did not start on the snapshot (not a snapshot "
                                  "file, or a damaged one?); see %s"
                                  % os.path.join(dir, E.LOGFILE_NAME))
            time.sleep(0.02)
        client = valkey.Valkey(unix_socket_path=sock, socket_timeout=timeout_s,
                               decode_responses=True)
        keys = int(client.dbsize())
        client.config_set("appendonly", "yes")      # rewrites the AOF from the data
        while True:
            info = client.info("persistence")
            if (info.get("aof_enabled") and not info.get("aof_rewrite_in_progress")
                    and not info.get("aof_rewrite_scheduled")):
                break
            if time.monotonic() > deadline:
                raise BackupError("the store did not write its append-only file in time")
            time.sleep(0.05)
        if info.get("aof_last_bgrewrite_status") != "ok":
            raise BackupError("the store failed to write its append-only file (see %s)"
                              % os.path.join(dir, E.LOGFILE_NAME))
        client.close()
        proc.terminate()
        proc.wait(timeout_s)
        proc = None
        os.unlink(rdb)
        return keys, moved
    except BaseException:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in (rdb,):
            if os.path.exists(p):
                os.unlink(p)
        if moved:                       # as it was
            if os.path.exists(aof):
                shutil.rmtree(aof)
            os.rename(moved, aof)
        raise
    finally:
        E._release_lock(fd)
