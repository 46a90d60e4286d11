"""The binds of each account on this node (who may bind is `proxyd.auth`)."""
from __future__ import annotations

from typing import Any, Callable

from twisted.logger import Logger

from .smpp.constants import STATUS

log = Logger(namespace="proxyd.accounts")


class Registry:
    """Accounts from the config and the sessions bound for each (on this node)."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.sessions: dict[str, set] = {}
        self.on_ready: list[Callable[[Any], None]] = []
        self.on_unbound: list[Callable[[Any], None]] = []

    def set_config(self, config: Any) -> None:
        self.config = config

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
