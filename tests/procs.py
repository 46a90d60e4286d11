"""Real processes for integration tests: the simulator and proxyd under twistd."""
from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port: int, proc: subprocess.Popen | None = None, deadline_s: float = 30.0,
              log: Path | None = None) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            text = log.read_text() if log and log.exists() else ""
            raise RuntimeError("process exited with %s before listening on %d\n%s"
                               % (proc.returncode, port, text[-3000:]))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listening on %d after %ss" % (port, deadline_s))


_ALL: list = []


@atexit.register
def _kill_leftovers() -> None:
    """Safety net: no test process outlives the test run, whatever failed."""
    for proc in _ALL:
        if proc.p.poll() is None:
            proc.p.kill()


class Proc:
    """A child process with its log file; stopped (SIGTERM, then SIGKILL) on stop()."""

    def __init__(self, args: list[str], log: Path, cwd: Path | None = None,
                 env: dict | None = None) -> None:
        self.args = args
        self.log = log
        self.logf = open(log, "ab")
        e = dict(os.environ)
        e["PYTHONUNBUFFERED"] = "1"
        if env:
            e.update(env)
        self.p = subprocess.Popen(args, stdout=self.logf, stderr=subprocess.STDOUT,
                                  cwd=str(cwd or ROOT), env=e)
        _ALL.append(self)

    def wait_port(self, port: int, deadline_s: float = 30.0) -> None:
        wait_port(port, self.p, deadline_s, self.log)

    def kill9(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
            self.p.wait(10)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(5)
        self.logf.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def start_sim(tmp: Path, port: int | None = None, *extra: str, name: str = "sim") -> tuple:
    port = port or free_port()
    record = tmp / ("%s-record.jsonl" % name)
    proc = Proc([str(BIN / "twistd"), "-n", "--pidfile=", "--logfile=-", "proxyd-smsc",
                 "--listen", "tcp:%d:interface=127.0.0.1" % port, "--record", str(record),
                 *extra], tmp / ("%s.log" % name))
    try:
        proc.wait_port(port)
    except BaseException:
        proc.stop()
        raise
    return proc, port, record


FILTERS = ROOT / "conf" / "filters"


def write_config(tmp: Path, text: str, name: str = "proxyd.toml") -> Path:
    """Write a config; a [policy] section pointing at the shipped word lists is added
    when the text has none."""
    if "[policy]" not in text:
        text += '\n[policy]\nfilters_dir = "%s"\n' % FILTERS
    p = tmp / name
    p.write_text(text)
    return p


def start_proxyd(tmp: Path, config: Path, port: int, name: str = "proxyd",
                 wait_for: int | None = None) -> Proc:
    proc = Proc([str(BIN / "twistd"), "-n", "--pidfile=", "--logfile=-",
                 "proxyd", "--config", str(config)], tmp / ("%s.log" % name), cwd=tmp)
    try:
        proc.wait_port(wait_for or port, 60)
    except BaseException:
        proc.stop()
        raise
    return proc


def wait_until(pred: Callable[[], Any], what: str, deadline_s: float = 30.0) -> Any:
    """Poll `pred` every 50 ms until it returns something true, and return that; fail with
    "timed out after Ns waiting for <what>" once `deadline_s` (a limit on waiting, never a
    measurement) has passed.

    In a test that runs the Twisted reactor (a twisted.trial TestCase: `yield` the result)
    it returns a Deferred and polls with the reactor turning; `pred` may return a Deferred.
    Anywhere else it blocks (sleeping between polls) and `pred` must return a plain value.
    """
    if _reactor_running():
        return _wait_until_deferred(pred, what, deadline_s)
    end = time.monotonic() + deadline_s
    while True:
        ok = pred()
        if _is_deferred(ok):
            raise TypeError("wait_until(%s): pred returned a Deferred outside the reactor"
                            % what)
        if ok:
            return ok
        if time.monotonic() > end:
            raise AssertionError("timed out after %ss waiting for %s" % (deadline_s, what))
        time.sleep(0.05)


def _reactor_running() -> bool:
    """True in the reactor's own thread while it runs (never imports, so never installs,
    a reactor)."""
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None or not reactor.running:
        return False
    from twisted.python.threadable import isInIOThread
    return isInIOThread()


def _is_deferred(x: Any) -> bool:
    defer = sys.modules.get("twisted.internet.defer")
    return defer is not None and isinstance(x, defer.Deferred)


def _wait_until_deferred(pred: Callable[[], Any], what: str, deadline_s: float) -> Any:
    from twisted.internet import defer, reactor, task

    @defer.inlineCallbacks
    def poll() -> Any:
        end = reactor.seconds() + deadline_s
        while True:
            ok = pred()
            if isinstance(ok, defer.Deferred):
                ok = yield ok
            if ok:
                return ok
            if reactor.seconds() > end:
                raise AssertionError("timed out after %ss waiting for %s" % (deadline_s, what))
            yield task.deferLater(reactor, 0.05, lambda: None)
    return poll()


def wait_log(proc: Proc, needle: str, count: int = 1, deadline_s: float = 20.0) -> None:
    wait_until(lambda: proc.text().count(needle) >= count, repr(needle), deadline_s)


def read_record(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # a torn last line of a killed process
    return out


def admin(tmp: Path, config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run proxyd-admin against a config (cwd = tmp, like the daemon)."""
    r = subprocess.run([str(BIN / "python"), "-m", "proxyd.admin", "--config", str(config),
                        *args], cwd=str(tmp), capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError("proxyd-admin %s failed (%d): %s%s" % (
            " ".join(args), r.returncode, r.stdout, r.stderr))
    return r
