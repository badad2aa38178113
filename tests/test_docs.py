"""The README is the front door: short, every link it and the docs pages hold resolves inside the repository,
every docs page is reachable from it, and its test command is the one CI runs (`.ci/run`)."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 150

# [text](target) and ![alt](target), with an optional "title"; the text may hold `code` but no brackets.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)


def _pages():
    return sorted(DOCS.glob("*.md"))


def _links(path: Path):
    """The link targets of a markdown file, outside fenced code blocks."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return LINK.findall(text)


def _anchors(path: Path) -> set:
    """The heading anchors GitHub gives a markdown file (lowercase, punctuation dropped, spaces to hyphens)."""
    seen, out = {}, set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _is_external(target: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) is not None  # http:, https:, mailto:, ...


def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines, more than {MAX_README_LINES}: move detail into docs/"


def test_there_are_docs_pages():
    assert _pages(), "docs/ holds no *.md page"


@pytest.mark.parametrize("md", [README, *_pages()], ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_inside_the_repository(md):
    problems = []
    for target in _links(md):
        if _is_external(target):
            assert target.startswith(("http://", "https://")), f"{md.relative_to(ROOT)}: link {target!r}: unexpected scheme"
            continue
        path = target.split("#", 1)[0].split("?", 1)[0]
        resolved = (md.parent / path).resolve() if path else md.resolve()  # no path: an anchor on this page
        where = f"{md.relative_to(ROOT)}: link ({target})"
        if ROOT not in resolved.parents and resolved != ROOT:
            problems.append(f"{where} points outside the repository, to {resolved}")
        elif not resolved.exists():
            problems.append(f"{where} points to {resolved.relative_to(ROOT)}, which does not exist")
        elif "#" in target and resolved.suffix == ".md":
            anchor = target.split("#", 1)[1]
            if anchor not in _anchors(resolved):
                problems.append(f"{where}: {resolved.relative_to(ROOT)} has no heading with the anchor #{anchor}")
    assert not problems, "\n".join(problems)


def test_every_docs_page_is_linked_from_the_readme():
    linked = set()
    for target in _links(README):
        if not _is_external(target):
            path = target.split("#", 1)[0]
            if path:
                linked.add((README.parent / path).resolve())
    missing = [p.relative_to(ROOT) for p in _pages() if p.resolve() not in linked]
    assert not missing, f"README.md links to no docs page {', '.join(map(str, missing))} (add it to its Documentation list)"


def _ci_command() -> str:
    lines = [l.strip() for l in (ROOT / ".ci/run").read_text(encoding="utf-8").splitlines()]
    lines = [l for l in lines if l and not l.startswith("#")]
    assert lines, ".ci/run holds no command line"
    return lines[-1]


def test_readme_test_command_is_the_ci_command():
    ci = _ci_command()
    readme_lines = [l.strip() for l in README.read_text(encoding="utf-8").splitlines()]
    found = ci in readme_lines
    assert found, f"README.md does not hold .ci/run's command line text for text: {ci!r}"


def test_readme_first_command_matches_the_test_command():
    """Command 1 is the test command with the plain install and train.py in place of pytest."""
    ci = _ci_command()
    assert "-e '.[test]'" in ci and ci.endswith(".venv/bin/python -m pytest -q"), f".ci/run: unexpected command line {ci!r}"
    first = ci.replace("-e '.[test]'", "-e .").replace(".venv/bin/python -m pytest -q", ".venv/bin/python train.py")
    readme_lines = [l.strip() for l in README.read_text(encoding="utf-8").splitlines()]
    found = first in readme_lines
    assert found, f"README.md does not hold the first command, {first!r}"
