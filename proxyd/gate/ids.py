"""proxyd's own message ids."""
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
