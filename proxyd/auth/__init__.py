"""Authentication of clients (SMPP binds, HTTP): the throttle of failures, the password
verification pool, and the `Authenticator` that puts them together."""
from .core import Authenticator, QuietLog
from .hasher import Hasher
from .throttle import Attempt, MemoryThrottle, StoreThrottle, judge, source_of

__all__ = ["Attempt", "Authenticator", "Hasher", "MemoryThrottle", "QuietLog",
           "StoreThrottle", "judge", "source_of"]
