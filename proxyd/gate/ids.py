"""Message ids: proxyd's own, and the forms an operator's id may come back in."""
from __future__ import annotations

import os
import socket
import time
import zlib


class MessageIds:
    """proxyd message ids: node tag + start time + counter, hex; unique across restarts
    (the start time moves on) and nodes (the node tag), 25 characters."""

    def __init__(self, node_id: str = "") -> None:
        node = node_id or "%s-%d" % (socket.gethostname(), os.getpid())
        tag = zlib.crc32(node.encode()) & 0xFFFFFF
        start = int(time.time() * 1000) & 0xFFFFFFFFFFF
        self._prefix = "%06x%011x" % (tag, start)
        self._n = 0

    def next(self) -> bytes:
        self._n += 1
        return ("%s%08x" % (self._prefix, self._n)).encode()


def normalise_upstream_id(mid: bytes | str) -> list[str]:
    """The keys under which an operator id may be looked up: as given (lower case, no
    leading zeros), and its decimal<->hex twin, so receipts match whatever form they use."""
    s = mid.decode("latin-1") if isinstance(mid, bytes) else mid
    s = s.strip().lower()
    keys = [s.lstrip("0") or "0"]
    if s.isdigit():
        keys.append(format(int(s), "x"))
    else:
        try:
            keys.append(str(int(s, 16)).lstrip("0") or "0")
        except ValueError:
            pass
    return keys
