"""What a ledger operation answers when it is refused."""
from __future__ import annotations

from proxyd.store.client import StoreError


class LedgerError(StoreError):
    """A ledger operation was refused."""


class InsufficientBalance(LedgerError):
    def __init__(self, account: str, balance: int, needed: int) -> None:
        super().__init__("account %s: balance %d < %d needed" % (account, balance, needed))
        self.account = account
        self.balance = balance
        self.needed = needed


class DuplicateReservation(LedgerError):
    def __init__(self, account: str, msg_id: str) -> None:
        super().__init__("account %s: message %s is already reserved" % (account, msg_id))
        self.account = account
        self.msg_id = msg_id
