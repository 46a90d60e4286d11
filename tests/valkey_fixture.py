"""A real valkey-server for tests: `valkey_socket` (session-scoped pytest fixture).

Use it from a test module with ``from tests.valkey_fixture import valkey_socket`` (the import
registers the fixture). For ``twisted.trial`` TestCase classes, which cannot take fixture
arguments, decorate the class with ``@pytest.mark.usefixtures("valkey_class")``: it sets
``cls.socket_path``, and ``self.store = yield connect_store(self)`` in their setUp gives a
`Store` on it, disconnected after the test. Tests share one server, so each test uses its
own account names.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from typing import Any, Iterator

import pytest
from twisted.internet import defer

from proxyd.store.embedded import find_server_binary, ping_blocking, server_args


class ValkeyProcess:
    """A valkey-server subprocess with its data in a fresh temporary directory."""

    def __init__(self, appendfsync: str = "everysec") -> None:
        self.dir = tempfile.mkdtemp(prefix="proxyd-vk-")
        self.args = server_args(find_server_binary(), self.dir, appendfsync)
        self.socket_path = os.path.join(self.dir, "valkey.sock")
        self.proc: subprocess.Popen | None = None

    def start(self) -> str:
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not ping_blocking(self.socket_path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("valkey-server did not start; see %s/valkey.log" % self.dir)
            time.sleep(0.02)
        return self.socket_path

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def valkey_socket() -> Iterator[str]:
    """The unix socket path of a valkey-server running for the whole test session."""
    server = ValkeyProcess()
    try:
        yield server.start()
    finally:
        server.cleanup()


@pytest.fixture(scope="class")
def valkey_class(request: pytest.FixtureRequest, valkey_socket: str) -> None:
    """For unittest/trial classes: sets ``cls.socket_path``."""
    request.cls.socket_path = valkey_socket


@defer.inlineCallbacks
def connect_store(case: Any) -> Any:
    """A `Store` on the class's server (`valkey_class`), disconnected when `case` ends."""
    from twisted.internet import reactor

    from proxyd.store.client import Store
    store = yield Store.connect(case.socket_path, pool_size=2, timeout_s=5.0, reactor=reactor)
    case.addCleanup(store.disconnect)
    return store
