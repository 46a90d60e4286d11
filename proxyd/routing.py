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

    def pick(self, destination: str, account: Any, exclude: tuple = ()) -> Any | None:
        """The best bound upstream, or None (no route, or none bound)."""
        best = None
        best_key = None
        pinned = getattr(account, "upstreams", ()) or ()
        dest = None
        for u in self.upstreams:
            if not u.available or u in exclude:
                continue
            cfg = u.cfg
            if pinned and u.name not in pinned:
                continue
            if cfg.accounts and account.system_id not in cfg.accounts:
                continue
            if cfg.prefixes:
                if dest is None:
                    dest = destination.lstrip("+")
                if not dest.startswith(cfg.prefixes):
                    continue
            key = (cfg.priority, -u.free_window())
            if best_key is None or key < best_key:
                best, best_key = u, key
        return best

    def routable(self, destination: str, account: Any) -> bool:
        return bool(self.candidates(destination, account))
