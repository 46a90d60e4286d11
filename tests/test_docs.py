"""The docs are self-contained (issue 16, item 2): every link in README.md and docs/*.md is
a file of the repository (with an optional #anchor) or an anchor of the same page; nothing
points outside the repository."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_links_stay_in_the_repository():
    seen = 0
    for page in pages():
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            seen += 1
            assert "://" not in target and not target.startswith(("/", "mailto:")), (
                page.name, target)
            path = target.split("#", 1)[0]
            if path:
                assert (page.parent / path).exists(), (page.name, target)
    assert seen >= 5


def test_the_operations_guide_is_linked_and_covers_its_subjects():
    assert "(docs/OPERATIONS.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
    text = (ROOT / "docs" / "OPERATIONS.md").read_text(encoding="utf-8")
    for heading in ("## Install with systemd", "## Several nodes", "## Backups of the store",
                    "## Upgrades", "## Reading the logs", "## Monitoring"):
        assert heading in text, heading
