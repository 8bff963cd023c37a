"""The docs are a map that works in a fresh clone: README within 250 lines, every relative link resolves."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from hand2world.paths import REPO_ROOT

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def relative_links(path: Path) -> list[str]:
    """Targets of the markdown links in ``path`` that point into the repository (no URL, no bare anchor)."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # code blocks and spans hold no links
    text = re.sub(r"`[^`\n]*`", "", text)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def _ignored(path: Path) -> bool:
    try:
        out = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=REPO_ROOT, capture_output=True)
    except FileNotFoundError:  # pragma: no cover - no git: existence is all we can check
        return False
    return out.returncode == 0


def test_readme_is_a_map():
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move reference material to docs/"
    assert "make run" in "\n".join(lines) and "make test" in "\n".join(lines)


def test_the_link_finder(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("see [a](docs/a.md#part), [b](https://x.org/b), [c](#here), ![img](pic.png), `[d](code)`\n"
                   "```\n[e](in/a/block.md)\n```\n[f](../up.md)\n")
    assert relative_links(doc) == ["docs/a.md#part", "../up.md"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve_in_a_clone(doc):
    links = relative_links(doc)
    if doc.name == "README.md":
        assert "docs/architecture.md" in links
    bad = []
    for target in links:
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        if not path.exists() or _ignored(path) or REPO_ROOT.resolve() not in path.parents:
            bad.append(target)
    assert not bad, f"{doc.relative_to(REPO_ROOT)}: links that do not resolve in a clone: {bad}"
