"""Privacy in log lines: numbers are masked unless `[log] mask_numbers = false`."""
from __future__ import annotations

from typing import Any

_PRIVACY = {"mask": True}     # [log] mask_numbers, set by configure_logging at (re)load


def configure_logging(log_cfg: Any) -> None:
    """Apply `[log] mask_numbers` to every log line that shows a number."""
    _PRIVACY["mask"] = bool(log_cfg.mask_numbers)


def mask(number: str) -> str:
    """138****5678: numbers in logs keep their first 3 and last 4 digits (unless
    `[log] mask_numbers = false`)."""
    if not _PRIVACY["mask"]:
        return number
    if len(number) <= 7:
        return "*" * len(number)
    return number[:3] + "*" * (len(number) - 7) + number[-4:]
