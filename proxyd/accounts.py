"""Who may bind: account lookup, password checks, binds per account on this node.

scrypt verification costs tens of milliseconds, so it runs in a thread and a successful
(hash, password) pair is remembered in memory: a reconnecting client does not pay it twice.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable

from twisted.internet import defer, threads
from twisted.logger import Logger

from .passwords import verify_password
from .smpp.constants import STATUS

log = Logger(namespace="proxyd.accounts")


class Registry:
    """Accounts from the config and the sessions bound for each (on this node)."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.sessions: dict[str, set] = {}
        self._verified: set[bytes] = set()
        self.on_ready: list[Callable[[Any], None]] = []
        self.on_unbound: list[Callable[[Any], None]] = []

    def set_config(self, config: Any) -> None:
        self.config = config
        self._verified.clear()

    def authenticate(self, system_id: str, password: str) -> defer.Deferred:
        """Deferred[(status, AccountConfig|None)]."""
        account = self.config.account(system_id)
        if account is None:
            return defer.succeed((STATUS["ESME_RINVSYSID"], None))
        stored = account.password
        if not account.password_is_hashed:
            ok = stored == password
            return defer.succeed((0 if ok else STATUS["ESME_RINVPASWD"], account))
        key = hashlib.sha256(stored.encode() + b"\0" + password.encode()).digest()
        if key in self._verified:
            return defer.succeed((0, account))

        def checked(ok: bool) -> tuple[int, Any]:
            if ok:
                self._verified.add(key)
                return (0, account)
            return (STATUS["ESME_RINVPASWD"], account)

        return threads.deferToThread(verify_password, stored, password).addCallback(checked)

    def bound(self, session: Any, account: Any) -> int:
        """Register a bind; ESME_RBINDFAIL when the account has max_binds already."""
        s = self.sessions.setdefault(account.system_id, set())
        if len(s) >= account.max_binds:
            return STATUS["ESME_RBINDFAIL"]
        s.add(session)
        return 0

    def ready(self, session: Any) -> None:
        for cb in self.on_ready:
            cb(session)

    def unbound(self, session: Any) -> None:
        s = self.sessions.get(session.account.system_id)
        if s is not None:
            s.discard(session)
        for cb in self.on_unbound:
            cb(session)

    def receivers(self, system_id: str) -> list:
        return [s for s in self.sessions.get(system_id, ()) if s.can_receive]

    def count(self, system_id: str) -> int:
        return len(self.sessions.get(system_id, ()))
