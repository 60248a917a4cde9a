"""The README and docs/: every relative link and #anchor resolves, the README stays short, and the two command
blocks that .ci/run reads are where it looks for them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Pages another branch of the same change writes; until it lands, links to them are skipped, not failed.
AWAITED = {REPO / "docs" / "sandbox.md"}
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def prose_lines(page: Path) -> list[str]:
    """The page's lines outside fenced code blocks (a '# comment' in a bash block is not a heading)."""
    lines, fenced = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens."""
    headings = [line.lstrip("#").strip() for line in prose_lines(page) if re.match(r"#{1,6} ", line)]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def relative_links(page: Path) -> list[str]:
    targets = [m[1] for line in prose_lines(page) for m in LINK.finditer(re.sub(r"`[^`]*`", "", line))]
    return [t for t in targets if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    links = relative_links(page)
    assert links or page.name == "data.md", f"{page.name} links nowhere"
    broken, awaited = [], []
    for link in links:
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if target in AWAITED and not target.exists():
            awaited.append(link)
        elif not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and anchor not in anchors(target):
            broken.append(f"{link}: no heading #{anchor} in {target.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)
    if awaited:
        pytest.skip(f"links to pages not written yet: {', '.join(awaited)}")


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(REPO / link.partition("#")[0]).resolve() for link in relative_links(REPO / "README.md")}
    unlinked = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def test_the_readme_is_short_and_keeps_the_ci_command_blocks():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    for marker in ("<!-- main-command", "<!-- test-command"):
        after = text.split("\n" + marker, 1)
        assert len(after) == 2, f"README.md has no line starting with {marker!r} (.ci/run reads the block after it)"
        block = re.match(r"[^\n]*\n```bash\n(.+?)\n```\n", after[1], re.S)
        assert block and block[1].strip(), f"no bash block right after {marker!r}"
