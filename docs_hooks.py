"""Hooks of the documentation site: mkdocs.yml names this file as MkDocs hooks and as a griffe
extension (``docs_hooks.py:ProjectDocstrings``) of mkdocstrings.

- ``ProjectDocstrings`` reads the docstrings as the code writes them: Google style, where several
  arguments that share a description are listed on one line (``low, high: the bounds``; each
  becomes its own entry with that description), and Sphinx roles in running text
  (``:class:`~hyperdnn.WeightSpec```) render as code (``WeightSpec``), simple reStructuredText
  tables (``=====`` borders) as Markdown tables and ``Example::`` as ``Example:`` followed by its
  indented code. A function that a module's
  ``__all__`` exports but that exists only at run time (``HEADS, register_head, create_head,
  list_heads = factory_registry(...)``) is documented from the running module.
- ``on_files`` / ``on_page_markdown``: a page may link a file of the repository outside ``docs/``
  (``![W5](../benchmarks/results/x.png)``, as GitHub shows it); the file is copied into the site
  under ``repo/`` and the link points there. A link to a file that does not exist stays as it is,
  and the strict build reports it.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import griffe
from mkdocs.structure.files import File, Files

#: sections whose entries are ``name: description`` (Google style)
NAMED_SECTIONS = re.compile(
    r"^(\s*)(Args|Arguments|Parameters|Params|Attributes|Other Parameters|Keyword Args|Keyword Arguments):\s*$"
)
#: ``a, b (type): description``: an entry naming several arguments
NAME_LIST = re.compile(r"^(\s*)(\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)+)(\s*\([^)]*\))?:(\s.*|)$")
#: a Sphinx role in running text: :class:`~a.b.C`, :func:`f`, ...
ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const|term|ref):`(~?)([^`]+)`")


def _role_as_code(match: re.Match[str]) -> str:
    name = match.group(2)
    if match.group(1):  # ~a.b.C shows C, as Sphinx does
        name = name.rsplit(".", 1)[-1]
    return f"`{name}`"


def split_name_lists(text: str) -> str:
    """Repeat each entry that names several arguments once per name, in the named sections."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        header = NAMED_SECTIONS.match(lines[i])
        out.append(lines[i])
        i += 1
        if not header:
            continue
        section_indent = len(header.group(1))
        item_indent: int | None = None
        while i < len(lines):
            line = lines[i]
            indent = len(line) - len(line.lstrip())
            if line.strip() and indent <= section_indent:
                break  # the section ends
            if item_indent is None and line.strip():
                item_indent = indent
            entry = NAME_LIST.match(line) if line.strip() and indent == item_indent else None
            if not entry:
                out.append(line)
                i += 1
                continue
            body = [line]  # the entry and its more indented continuation lines
            i += 1
            while i < len(lines) and lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) > item_indent:
                body.append(lines[i])
                i += 1
            lead, names, kind, rest = entry.groups()
            for name in (n.strip() for n in names.split(",")):
                out.append(f"{lead}{name}{kind or ''}:{rest}")
                out.extend(body[1:])
    return "\n".join(out)


BORDER = re.compile(r"^(\s*)(=+)((?: +=+)+)\s*$")


def _cells(line: str, starts: list[int]) -> list[str]:
    """A row of a simple table cut at the columns' starts; a cell that overflows into the next
    column (RST allows it in the last one only, the code does it elsewhere too) pushes that
    column's start past the overflowing word."""
    cells, begin = [], starts[0]
    for start in [*starts[1:], None]:
        end = len(line) if start is None else start
        while start is not None and 0 < end < len(line) and line[end - 1] != " ":
            end += 1
        cells.append(line[begin:end].strip())
        begin = end
    return cells


def rst_tables_to_markdown(text: str) -> str:
    """Simple reStructuredText tables (``===== =====`` borders, a header, rows whose first cell
    is empty continuing the row above) as Markdown tables."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        border = BORDER.match(lines[i])
        if not border:
            out.append(lines[i])
            i += 1
            continue
        starts = [m.start() for m in re.finditer(r"=+", lines[i])]
        rows: list[list[str]] = []
        borders, j = 1, i + 1
        while j < len(lines) and borders < 3:
            if BORDER.match(lines[j]):
                borders += 1
            elif lines[j].strip():
                cells = _cells(lines[j], starts)
                if rows and not cells[0] and borders == 2:
                    rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells)]
                else:
                    rows.append(cells)
            j += 1
        if borders < 3 or not rows:  # not a complete table: leave it as it is
            out.append(lines[i])
            i += 1
            continue
        indent = border.group(1)
        out.append(indent + "| " + " | ".join(rows[0]) + " |")
        out.append(indent + "|" + "---|" * len(starts))
        out.extend(indent + "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows[1:])
        i = j
    return "\n".join(out)


def _rewrite(text: str) -> str:
    text = re.sub(r"(?m)(\S)::$", r"\1:", text)  # Sphinx's literal-block marker: the block follows
    return split_name_lists(rst_tables_to_markdown(ROLE.sub(_role_as_code, text)))


_KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: griffe.ParameterKind.positional_only,
    inspect.Parameter.POSITIONAL_OR_KEYWORD: griffe.ParameterKind.positional_or_keyword,
    inspect.Parameter.VAR_POSITIONAL: griffe.ParameterKind.var_positional,
    inspect.Parameter.KEYWORD_ONLY: griffe.ParameterKind.keyword_only,
    inspect.Parameter.VAR_KEYWORD: griffe.ParameterKind.var_keyword,
}


def _annotation(value: Any) -> str | None:
    if value is inspect.Parameter.empty:
        return None
    return value if isinstance(value, str) else getattr(value, "__name__", repr(value))


def _runtime_function(name: str, obj: Any, like: griffe.Docstring | None) -> griffe.Function:
    """A griffe function for a callable that exists only at run time (``a, b = make()``)."""
    signature = inspect.signature(obj)
    parameters = griffe.Parameters(
        *(
            griffe.Parameter(
                p.name,
                annotation=_annotation(p.annotation),
                kind=_KINDS[p.kind],
                default=None if p.default is inspect.Parameter.empty else repr(p.default),
            )
            for p in signature.parameters.values()
        )
    )
    function = griffe.Function(name, parameters=parameters, returns=_annotation(signature.return_annotation))
    if obj.__doc__:
        function.docstring = griffe.Docstring(
            _rewrite(inspect.cleandoc(obj.__doc__)),
            parent=function,
            parser=like.parser if like else None,
            parser_options=like.parser_options if like else None,
        )
    return function


class ProjectDocstrings(griffe.Extension):
    """Rewrite each docstring before it is parsed, and add the functions that a module's
    ``__all__`` exports but that only exist at run time (see the module docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _rewrite(obj.docstring.value)

    def on_module_members(self, *, mod: griffe.Module, **kwargs: Any) -> None:
        try:
            runtime = importlib.import_module(mod.path)
        except ImportError:
            return
        for name in getattr(runtime, "__all__", ()):
            obj = getattr(runtime, name, None)
            if name not in mod.members and callable(obj) and not isinstance(obj, type):
                mod.set_member(name, _runtime_function(name, obj, mod.docstring))


# ---------------------------------------------------------------------- MkDocs hooks
LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?(\))")
REPO_FILES = "repo"


def _outside_target(page_src: str, url: str, docs_dir: Path) -> Path | None:
    """The repository file outside ``docs/`` that a relative link points to, if it exists."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", url) or url.startswith("/"):
        return None
    target = (docs_dir / page_src).parent.joinpath(url).resolve()
    root = docs_dir.resolve().parent
    if target.is_relative_to(docs_dir.resolve()) or not target.is_relative_to(root) or not target.is_file():
        return None
    return target


def on_files(files: Files, config: Any) -> Files:
    docs_dir = Path(config["docs_dir"])
    root = docs_dir.resolve().parent
    for page in list(files.documentation_pages()):
        text = Path(page.abs_src_path).read_text(encoding="utf-8")
        for match in LINK.finditer(text):
            target = _outside_target(page.src_uri, match.group(2), docs_dir)
            uri = f"{REPO_FILES}/{target.relative_to(root).as_posix()}" if target else None
            if uri and files.get_file_from_path(uri) is None:
                files.append(File.generated(config, uri, abs_src_path=str(target)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    docs_dir = Path(config["docs_dir"])
    root = docs_dir.resolve().parent
    depth = page.file.src_uri.count("/")

    def rewrite(match: re.Match[str]) -> str:
        target = _outside_target(page.file.src_uri, match.group(2), docs_dir)
        if target is None:
            return match.group(0)
        url = "../" * depth + f"{REPO_FILES}/{target.relative_to(root).as_posix()}"
        return f"{match.group(1)}{url}{match.group(3) or ''}{match.group(4)}"

    return LINK.sub(rewrite, markdown)
