"""The documentation site (mkdocs.yml, ``make docs``): the API pages document every public name,
the site builds strictly (no warning) with its pages rendered and every internal link resolving,
and the code of the getting-started page runs (the other guides' code runs in
tests/test_taxonomy.py, tests/test_recipes.py and tests/test_target_kernels.py)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import re
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import torch

import hyperdnn

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API = DOCS / "api"
DIRECTIVE = re.compile(r"^::: (\S+)\s*\n((?:[ \t]+\S.*\n?)*)", re.M)


def directives() -> dict[str, list[str] | None]:
    """``::: module`` of every API page -> its explicit ``members`` list (``None``: ``__all__``)."""
    found: dict[str, list[str] | None] = {}
    for page in sorted(API.glob("*.md")):
        for path, options in DIRECTIVE.findall(page.read_text(encoding="utf-8")):
            members = re.search(r"^\s+members:\s*\[(.*)\]\s*$", options, re.M)
            found[path] = re.findall(r"[\"']?([\w.]+)[\"']?", members.group(1)) if members else None
    return found


def documented_objects() -> dict[str, object]:
    """``module.name`` -> object, for every name the directives render."""
    out: dict[str, object] = {}
    for path, members in directives().items():
        module = importlib.import_module(path)
        names = members if members is not None else list(getattr(module, "__all__", []))
        for name in names:
            out[f"{path}.{name}"] = getattr(module, name)
    return out


def where_documented(name: str, documented: dict[str, object]) -> list[str]:
    obj = getattr(hyperdnn, name)
    if isinstance(obj, str):  # __version__: a plain value, found by its own path
        return [p for p in documented if p == f"hyperdnn.{name}"]
    return [path for path, other in documented.items() if other is obj]


# ---------------------------------------------------------------------- (a) the API pages
def test_the_api_pages_document_every_public_name() -> None:
    documented = documented_objects()
    missing = [name for name in hyperdnn.__all__ if not where_documented(name, documented)]
    assert missing == [], f"names of hyperdnn.__all__ on no page of docs/api/: {missing}"


def test_every_public_module_has_its_api_section() -> None:
    """Each module of the library is rendered by a directive of its own or of its package
    (hyperdnn.target covers its parts)."""
    paths = set(directives())
    modules = [
        m.name
        for m in pkgutil.walk_packages(hyperdnn.__path__, "hyperdnn.")
        if not m.ispkg and not any(part.startswith("_") for part in m.name.split("."))
    ]
    assert len(modules) > 50
    uncovered = [m for m in modules if not any(m == p or (m.startswith(p + ".") and p != "hyperdnn") for p in paths)]
    assert uncovered == [], f"add a '::: <module>' line to the fitting page of docs/api/ for {uncovered}"
    for path in paths:
        importlib.import_module(path)  # every directive names a module that exists


def test_the_api_index_lists_every_public_name() -> None:
    text = (API / "index.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"\[`(\w+)`\]\[hyperdnn[\w.]*\]", text))
    assert set(hyperdnn.__all__) - {"__version__"} <= listed, set(hyperdnn.__all__) - listed


def test_every_api_page_and_recipe_page_is_in_the_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8").split("\nnav:", 1)[1]
    pages = set(re.findall(r"([\w/]+\.md)", nav))
    assert {p.relative_to(DOCS).as_posix() for p in API.glob("*.md")} <= pages
    assert {"index.md", "taxonomy.md", "recipes.md", "benchmarks.md", "architecture.md"} <= pages
    recipes = {p.stem for p in (ROOT / "src" / "hyperdnn" / "recipes").glob("[!_]*.py")}
    recipe_pages = {f"{name}.md" for name in recipes if (DOCS / f"{name}.md").is_file()}
    assert {"continual.md", "uncertainty.md"} <= recipe_pages
    assert recipe_pages <= pages, f"add these recipe pages under Recipes in mkdocs.yml: {recipe_pages - pages}"
    for page in pages:
        assert (DOCS / page).is_file(), f"mkdocs.yml's nav names {page}, which docs/ lacks"


# ---------------------------------------------------------------------- (b) the built site
class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.headings: list[tuple[str, str]] = []
        self._heading: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"])
        for key in ("href", "src"):
            if values.get(key) and tag in ("a", "link", "img", "script"):
                self.links.append(values[key])
        if tag in ("h1", "h2", "h3"):
            self._heading, self._text = tag, []

    def handle_data(self, data: str) -> None:
        if self._heading:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == self._heading:
            self.headings.append((tag, "".join(self._text).replace("¶", "").strip()))
            self._heading = None


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _inventory(path: Path) -> set[str]:
    """The object names of a Sphinx objects.inv (four header lines, then zlib)."""
    data = path.read_bytes()
    body = zlib.decompress(data.split(b"\n", 4)[4]).decode("utf-8")
    return {line.split(" ", 1)[0] for line in body.splitlines() if line.strip()}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings_handlers") is None:
        pytest.skip("the docs extra is not installed (pip install -e '.[docs]'): the site is not built")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert "WARNING" not in log, log[-6000:]
    return out


def test_the_site_builds_strictly_with_the_pages_rendered(site: Path) -> None:
    index = _parse(site / "index.html")
    assert ("h1", "Getting started") in index.headings
    assert {("h2", "Install"), ("h2", "The two commands"), ("h2", "Twenty lines")} <= set(index.headings)
    text = re.sub(r"<[^>]+>", "", (site / "index.html").read_text(encoding="utf-8"))  # highlighted code as text
    assert "hnet = HyperNetwork(target, encoder, MLP((64,)), Chunked(chunk_size=512, embed_dim=8))" in text

    page = (site / "api" / "hypernet.html").read_text(encoding="utf-8")
    api = _parse(site / "api" / "hypernet.html")
    assert ("h1", "Hypernetworks") in api.headings
    assert {"hyperdnn.hypernet.HyperNetwork", "hyperdnn.hypernet.HyperModel.summary"} <= api.ids
    assert "Parameters:" in page or "Parameters</" in page  # the Args: sections rendered as tables
    for built in ("taxonomy.html", "recipes.html", "benchmarks.html", "architecture.html", "api/index.html"):
        assert (site / built).is_file(), built


def test_the_objects_inventory_has_every_public_name(site: Path) -> None:
    names = _inventory(site / "objects.inv")
    documented = {path: obj for path, obj in documented_objects().items() if path in names}
    missing = [name for name in hyperdnn.__all__ if not where_documented(name, documented)]
    assert missing == [], f"rendered on no page (griffe cannot see them?): {missing}"


def test_every_internal_link_of_the_built_site_resolves(site: Path) -> None:
    pages = {path: _parse(path) for path in site.rglob("*.html")}
    assert len(pages) > 15
    broken = []
    for path, parsed in pages.items():
        for link in parsed.links:
            parts = urlsplit(link)
            if parts.scheme or link.startswith("//"):
                continue  # external
            if parts.path.startswith("/") and path.name != "404.html":
                broken.append(f"{path.relative_to(site)}: {link} (absolute: breaks when the site is not at /)")
                continue
            base = site if parts.path.startswith("/") else path.parent  # 404.html is served at any depth
            target = (base / unquote(parts.path).lstrip("/")).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file() or not target.is_relative_to(site.resolve()):
                broken.append(f"{path.relative_to(site)}: {link}")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{path.relative_to(site)}: {link} (no such anchor)")
    assert broken == [], "\n".join(broken[:40])


# ---------------------------------------------------------------------- (c) the guides' code
def _python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(encoding="utf-8"), flags=re.S)


def test_the_getting_started_code_is_examples_quickstart() -> None:
    blocks = _python_blocks("index.md")
    assert len(blocks) == 1
    example = (ROOT / "examples" / "quickstart.py").read_text(encoding="utf-8")
    assert blocks[0] == example.split('"""', 2)[2].lstrip("\n")


@pytest.mark.parametrize("index", range(len(_python_blocks("index.md"))))
def test_the_getting_started_code_runs(index: int, capsys) -> None:
    pytest.importorskip("sklearn", reason="the quickstart needs the data extra")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exec(compile(_python_blocks("index.md")[index], f"index.md:block{index}", "exec"), {"__name__": "__index__"})
    finally:
        torch.set_num_threads(before)
    accuracy = float(re.search(r"test accuracy (\S+)", capsys.readouterr().out).group(1))
    assert accuracy > 0.85  # the page says about 94%


def test_the_other_guides_blocks_are_those_their_tests_run() -> None:
    """taxonomy.md: tests/test_taxonomy.py runs every block; recipes.md: tests/test_recipes.py runs
    its one block (the complete recipe); a new block there would run nowhere."""
    taxonomy_test = (ROOT / "tests" / "test_taxonomy.py").read_text(encoding="utf-8")
    assert 'findall(r"```python\\n(.*?)```"' in taxonomy_test and "test_snippet_runs" in taxonomy_test
    recipes = (DOCS / "recipes.md").read_text(encoding="utf-8")
    assert len(_python_blocks("recipes.md")) == 1
    assert re.search(r"## A complete recipe.*?```python\n", recipes, re.S)


# ---------------------------------------------------------------------- docs_hooks.py
@pytest.fixture(scope="module")
def hooks():
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("griffe") is None:
        pytest.skip("the docs extra is not installed (pip install -e '.[docs]')")
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_arguments_sharing_a_description_become_one_entry_each(hooks) -> None:
    text = "Run.\n\nArgs:\n    x: one.\n    low, high (float): the bounds,\n        inclusive.\n\nReturns:\n    a, b: kept.\n"
    assert hooks.split_name_lists(text) == (
        "Run.\n\nArgs:\n    x: one.\n    low (float): the bounds,\n        inclusive.\n"
        "    high (float): the bounds,\n        inclusive.\n\nReturns:\n    a, b: kept."
    )


def test_sphinx_roles_and_simple_tables_render_as_markdown(hooks) -> None:
    text = (
        "See :class:`~hyperdnn.spec.WeightSpec` and :func:`hyperdnn.init.calibrate`::\n\n"
        "===== ==========\nname  meaning\n===== ==========\n``a`` first\n      continued\n``bb`` second\n"
        "===== ==========\n"
    )
    assert hooks._rewrite(text) == (
        "See `WeightSpec` and `hyperdnn.init.calibrate`:\n\n"
        "| name | meaning |\n|---|---|\n| ``a`` | first continued |\n| ``bb`` | second |"
    )
