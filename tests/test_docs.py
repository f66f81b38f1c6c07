"""The documentation site: it builds with ``mkdocs build --strict``, and every model card is complete and true.

A model card (``docs/models/<name>.md``, every file there but ``index.md``) has the sections of
:data:`SECTIONS` in that order. Its "Equations" table maps each equation to code: every file path in the table
exists and every function or class named after it exists in that module (dotted names such as
``FDED.split_spectrum`` included). Every config a card names exists, and its "Measured here" section carries the
marker that the benchmark refresh looks for. Across all pages, every repository path that is named exists, and no
page refers to files a user of the repository does not have.
"""

import importlib
import importlib.util
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CARDS = sorted(path for path in (DOCS / "models").glob("*.md") if path.name != "index.md")
PAGES = sorted(DOCS.rglob("*.md"))

SECTIONS = (
    "Paper",
    "What it does",
    "Equations",
    "Resolutions and deviations",
    "Configs",
    "Measured here",
    "What cannot be measured here",
)
MEASURED_MARKER = "<!-- measured: update -->"
EXPECTED_CARDS = {"favs", "favs-baseline", "tpavi", "sfm", "sound-of-pixels", "clipsep", "hfra", "dgfnet"}

# A repository path named on a page: a folder users have, then path characters (brace lists and globs included).
REPO_PATH = re.compile(r"(?<![\w/.-])((?:src|configs|benchmarks|tests|notebooks|scripts|requirements)/[\w./{},*-]*)")
CODE_SPAN = re.compile(r"`([^`]+)`")
DOTTED_NAME = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")
# Placeholders in command templates (configs/experiment/NAME.yaml), not files.
PLACEHOLDER = re.compile(r"NAME|EXPERIMENT|<|\.\.\.")


def _sections(text: str) -> dict[str, str]:
    """``## Heading`` → the text up to the next ``## `` heading, in order."""
    parts = re.split(r"^## +(.+?)\s*$", text, flags=re.MULTILINE)
    return {title: body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def _expand_braces(token: str) -> list[str]:
    """Shell-style brace expansion of ``a{1,2}b`` (several groups allowed, no nesting)."""
    pieces = re.split(r"\{([^{}]*)\}", token)
    choices = [[piece] if i % 2 == 0 else piece.split(",") for i, piece in enumerate(pieces)]
    return ["".join(parts) for parts in itertools.product(*choices)]


def _repo_paths(text: str) -> set[str]:
    """Every repository path named in ``text``, brace lists expanded, trailing punctuation removed."""
    paths = set()
    for match in REPO_PATH.finditer(text):
        token = match.group(1).rstrip(".,")
        if PLACEHOLDER.search(token):
            continue
        paths.update(_expand_braces(token))
    return paths


def _missing(path: str) -> bool:
    if any(char in path for char in "*?["):
        return not list(ROOT.glob(path))
    return not (ROOT / path).exists()


def _equation_rows(section: str) -> list[list[str]]:
    """The cells of each body row of the first Markdown table in ``section``."""
    rows = [line.strip() for line in section.splitlines() if line.strip().startswith("|")]
    assert len(rows) >= 3, "the Equations section has no table (a header, a separator and at least one row)"
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert header[-1] == "Implemented in", f"the Equations table's last column must be 'Implemented in', got {header}"
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def _implementations(cell: str) -> list[tuple[str, str]]:
    """``(path, name)`` pairs of an "Implemented in" cell: `` `file.py` · `A`, `B.c`; `other.py` · `D` ``."""
    pairs: list[tuple[str, str]] = []
    current: str | None = None
    for token in CODE_SPAN.findall(cell):
        if token.endswith(".py"):
            current = token
            continue
        assert current is not None, f"{token!r} is named before any file in the cell {cell!r}"
        assert DOTTED_NAME.match(token), f"{token!r} (after {current}) is not a function or class name"
        pairs.append((current, token))
    return pairs


def _module(path: str) -> str:
    relative = Path(path).relative_to("src").with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once with ``mkdocs build --strict`` (any warning fails the build)."""
    for package in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(package.split(".")[0]) is None or importlib.util.find_spec(package) is None:
            pytest.fail(
                f"{package} is not installed: the documentation tools are dev dependencies, install them with "
                "`pip install -e '.[dev]'` (pinned in requirements/constraints.txt)"
            )
    folder = tmp_path_factory.mktemp("docs") / "site"
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml")]
    result = subprocess.run(
        [*command, "--site-dir", str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return folder


def test_mkdocs_builds_the_site_in_strict_mode(site: Path) -> None:
    for card in CARDS:
        assert (site / "models" / card.stem / "index.html").is_file(), f"{card.name} was not built"
    reference = (site / "reference" / "fusion" / "index.html").read_text()
    assert "avtoolkit.fusion.fded.FDED" in reference, "the API reference rendered no docstrings"
    assert ":class:`" not in reference, "reST roles of the docstrings were not rendered as code"


def test_built_site_names_no_internal_file(site: Path) -> None:
    offending = sorted(
        str(page.relative_to(site))
        for page in site.rglob("*.html")
        if any(internal in page.read_text() for internal in ("specs/", "/work/"))
    )
    assert not offending, f"built pages refer to files users do not have: {offending}"


def test_every_model_has_a_card() -> None:
    assert {card.stem for card in CARDS} >= EXPECTED_CARDS


@pytest.mark.parametrize("card", CARDS, ids=lambda path: path.stem)
def test_card_has_every_section_in_order(card: Path) -> None:
    sections = _sections(card.read_text())
    assert tuple(title for title in sections if title in SECTIONS) == SECTIONS, (
        f"{card.name}: sections {list(sections)}; a card needs {list(SECTIONS)} in this order"
    )
    assert re.search(r"\]\(https?://", sections["Paper"]), f"{card.name}: the Paper section links to no paper"
    assert MEASURED_MARKER in sections["Measured here"], f"{card.name}: 'Measured here' lacks {MEASURED_MARKER}"
    for title in SECTIONS:
        assert sections[title].strip(), f"{card.name}: the section {title!r} is empty"


@pytest.mark.parametrize("card", CARDS, ids=lambda path: path.stem)
def test_card_equations_point_at_existing_code(card: Path) -> None:
    rows = _equation_rows(_sections(card.read_text())["Equations"])
    problems = []
    for row in rows:
        pairs = _implementations(row[-1])
        if not pairs:
            problems.append(f"row {row[0]!r} names no file and function")
        for path, name in pairs:
            if not (ROOT / path).is_file():
                problems.append(f"row {row[0]!r}: {path} does not exist")
                continue
            module = importlib.import_module(_module(path))
            target: object = module
            for attribute in name.split("."):
                if not hasattr(target, attribute):
                    problems.append(f"row {row[0]!r}: {_module(path)} has no {name}")
                    break
                target = getattr(target, attribute)
    assert not problems, f"{card.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("card", CARDS, ids=lambda path: path.stem)
def test_card_configs_exist(card: Path) -> None:
    sections = _sections(card.read_text())
    configs = {path for path in _repo_paths(sections["Configs"]) if path.startswith("configs/")}
    assert any(path.startswith("configs/experiment/") for path in configs), f"{card.name} names no experiment"
    missing = sorted(path for path in _repo_paths(card.read_text()) if path.startswith("configs/") and _missing(path))
    assert not missing, f"{card.name} names configs that do not exist: {missing}"


def test_every_repository_path_on_every_page_exists() -> None:
    missing = {
        str(page.relative_to(ROOT)): sorted(path for path in _repo_paths(page.read_text()) if _missing(path))
        for page in PAGES
    }
    missing = {page: paths for page, paths in missing.items() if paths}
    assert not missing, f"pages name repository paths that do not exist: {missing}"


def test_no_page_refers_to_files_users_do_not_have() -> None:
    for source in [*PAGES, ROOT / "mkdocs.yml"]:
        text = source.read_text()
        for internal in ("specs/", "/work/", "shared/papers"):
            assert internal not in text, f"{source.relative_to(ROOT)} refers to {internal!r}, which users do not have"
