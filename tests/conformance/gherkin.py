"""A tiny Gherkin parser: just what the Kubernetes Ingress conformance .feature files use.

Feature / Background / Scenario / Scenario Outline / Examples, Given/When/Then/And/But steps,
doc strings (\"\"\") and data tables. Outlines are expanded into one scenario per Examples row
(an outline without Examples runs once). pytest-bdd would pull in a whole framework for 5 files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

STEP_KEYWORDS = ("Given", "When", "Then", "And", "But")


class GherkinError(ValueError):
    pass


@dataclass(frozen=True)
class Step:
    keyword: str
    text: str
    doc: str | None = None
    table: tuple[tuple[str, ...], ...] = ()  # first row is the header
    line: int = 0

    def rows(self) -> list[dict[str, str]]:
        """Table rows as dicts keyed by the header row."""
        if not self.table:
            return []
        head = self.table[0]
        return [dict(zip(head, row, strict=True)) for row in self.table[1:]]


@dataclass
class Scenario:
    name: str
    steps: list[Step]
    line: int
    outline: bool = False
    examples: list[dict[str, str]] = field(default_factory=list)
    description: list[str] = field(default_factory=list)


@dataclass
class Feature:
    name: str
    path: Path
    background: list[Step]
    scenarios: list[Scenario]
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    """One runnable scenario: outline rows already substituted."""

    feature: Feature
    name: str
    steps: tuple[Step, ...]
    test_id: str
    line: int


def _cells(line: str) -> tuple[str, ...]:
    inner = line.strip()
    if not (inner.startswith("|") and inner.endswith("|")):
        raise GherkinError(f"bad table row: {line!r}")
    return tuple(c.strip() for c in inner[1:-1].split("|"))


def parse_feature(path: Path) -> Feature:
    lines = path.read_text(encoding="utf-8").splitlines()
    feature: Feature | None = None
    tags: list[str] = []
    background: list[Step] = []
    scenarios: list[Scenario] = []
    current: list[Step] | None = None  # where steps go
    scenario: Scenario | None = None
    in_examples = False
    example_head: tuple[str, ...] | None = None
    i = 0
    while i < len(lines):
        raw = lines[i]
        s = raw.strip()
        lineno = i + 1
        i += 1
        if not s or s.startswith("#"):
            continue
        if s.startswith("@"):
            tags.extend(t for t in s.split() if t.startswith("@"))
            continue
        head, _, rest = s.partition(":")
        if head == "Feature":
            feature = Feature(rest.strip(), path, background, scenarios, tags)
            current = None
            continue
        if feature is None:
            raise GherkinError(f"{path}:{lineno}: text before Feature:")
        if head == "Background":
            current, scenario, in_examples = background, None, False
            continue
        if head in ("Scenario", "Scenario Outline", "Scenario Template"):
            scenario = Scenario(rest.strip(), [], lineno, outline=head != "Scenario")
            scenarios.append(scenario)
            current, in_examples, example_head = scenario.steps, False, None
            continue
        if head in ("Examples", "Scenarios"):
            if scenario is None or not scenario.outline:
                raise GherkinError(f"{path}:{lineno}: Examples outside a Scenario Outline")
            in_examples, example_head, current = True, None, None
            continue
        if s.startswith('"""'):
            if current is None or not current:
                raise GherkinError(f"{path}:{lineno}: doc string without a step")
            indent = len(raw) - len(raw.lstrip())
            body: list[str] = []
            while i < len(lines) and lines[i].strip() != '"""':
                text = lines[i]
                body.append(text[indent:] if text[:indent].strip() == "" else text.lstrip())
                i += 1
            if i >= len(lines):
                raise GherkinError(f"{path}:{lineno}: unterminated doc string")
            i += 1
            last = current[-1]
            current[-1] = Step(last.keyword, last.text, "\n".join(body) + "\n", last.table, last.line)
            continue
        if s.startswith("|"):
            cells = _cells(s)
            if in_examples:
                assert scenario is not None
                if example_head is None:
                    example_head = cells
                else:
                    scenario.examples.append(dict(zip(example_head, cells, strict=True)))
                continue
            if current is None or not current:
                raise GherkinError(f"{path}:{lineno}: table without a step")
            last = current[-1]
            current[-1] = Step(last.keyword, last.text, last.doc, (*last.table, cells), last.line)
            continue
        word = s.split(" ", 1)[0]
        if word in STEP_KEYWORDS and current is not None:
            current.append(Step(word, s[len(word) :].strip(), line=lineno))
            continue
        # Free text: feature or scenario description.
        if scenario is not None and not in_examples:
            scenario.description.append(s)
    if feature is None:
        raise GherkinError(f"{path}: no Feature:")
    return feature


_PLACEHOLDER = re.compile(r"<([^<>]+)>")


def _substitute(text: str, row: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: row.get(m.group(1), m.group(0)), text)


def _slug(text: str, limit: int = 60) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].rstrip("-")


def expand(feature: Feature) -> list[Case]:
    """Every runnable scenario with its Background steps first; ids are unique within the feature."""
    cases: list[Case] = []
    for n, sc in enumerate(feature.scenarios, 1):
        base = f"{feature.path.stem}/{n:02d}-{_slug(sc.name)}"
        rows = sc.examples if sc.outline and sc.examples else [None]
        for row in rows:
            steps = [*feature.background, *sc.steps]
            if row is not None:
                steps = [
                    Step(
                        st.keyword,
                        _substitute(st.text, row),
                        _substitute(st.doc, row) if st.doc else st.doc,
                        tuple(tuple(_substitute(c, row) for c in r) for r in st.table),
                        st.line,
                    )
                    for st in steps
                ]
                suffix = "[" + ",".join(f"{k}={v}" for k, v in row.items()) + "]"
            else:
                suffix = ""
            cases.append(Case(feature, sc.name, tuple(steps), base + suffix, sc.line))
    return cases


def load_cases(directory: Path) -> list[Case]:
    files = sorted(directory.glob("*.feature"))
    if not files:
        raise GherkinError(f"no .feature files in {directory}")
    return [case for f in files for case in expand(parse_feature(f))]
