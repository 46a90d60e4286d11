"""Choosing an upstream for a destination.

Eligible upstreams: bound now, open to the account (`[[upstream]] accounts`, empty = all;
an account's `upstreams` pins it to those), and matching the destination (`prefixes`, empty =
any). Among the eligible, the lowest `priority` value wins; ties go to the one with the most
free window (then config order), so load spreads over equal upstreams and the choice is
deterministic for a given state.
"""
from __future__ import annotations

from typing import Any, Iterable


class Router:
    def __init__(self, upstreams: Iterable[Any]) -> None:
        self.upstreams = upstreams if isinstance(upstreams, list) else list(upstreams)

    def candidates(self, destination: str, account: Any) -> list:
        """Every upstream that may carry this message, best first (bound or not)."""
        pinned = getattr(account, "upstreams", ()) or ()
        out = []
        for u in self.upstreams:
            cfg = u.cfg
            if pinned and u.name not in pinned:
                continue
            if cfg.accounts and account.system_id not in cfg.accounts:
                continue
            if cfg.prefixes and not destination.lstrip("+").startswith(
                    tuple(p.lstrip("+") for p in cfg.prefixes)):
                continue
            out.append(u)
        out.sort(key=lambda u: (u.cfg.priority, -u.free_window()))
        return out

    def _eligible(self, u: Any, destination: str, account: Any) -> bool:
        cfg = u.cfg
        pinned = account.upstreams
        if pinned and u.name not in pinned:
            return False
        if cfg.accounts and account.system_id not in cfg.accounts:
            return False
        if cfg.prefixes and not destination.lstrip("+").startswith(cfg.prefixes):
            return False
        return True

    def pick(self, destination: str, account: Any, exclude: tuple = ()) -> Any | None:
        """The best bound upstream, or None (no route, or none bound)."""
        best = None
        best_key = None
        for u in self.upstreams:
            if not u.available or u in exclude or not self._eligible(u, destination, account):
                continue
            if best is None:
                best = u
                continue
            if best_key is None:
                best_key = (best.cfg.priority, -best.free_window())
            key = (u.cfg.priority, -u.free_window())
            if key < best_key:
                best, best_key = u, key
        return best

    def routable(self, destination: str, account: Any) -> bool:
        for u in self.upstreams:
            if self._eligible(u, destination, account):
                return True
        return False
