"""What the few- and zero-shot recipes share: their data, a data set's classes (glyphs rendered
with the run's options, another data set through its class-level view), checked before a run.

Example::

    >>> from hyperdnn.recipes._class_data import glyph_classes
    >>> glyph_classes(("armenian", "georgian"))
    194
"""

from __future__ import annotations

from hyperdnn.data import DATASETS, ClassData, get_dataset
from hyperdnn.data.glyphs import GLYPH_CLASSES, load_glyphs, script_of
from hyperdnn.engine.errors import UsageError

__all__ = ["load_class_data", "check_class_data", "glyph_classes"]


def load_class_data(data: str, root: str, samples: int, scripts: tuple[str, ...], seed: int) -> ClassData:
    """The examples of data set ``data`` by class (``samples`` and ``scripts`` apply to glyphs;
    ``seed`` draws their jitter); a problem is a :class:`UsageError` naming it."""
    try:
        if data == "glyphs":
            return load_glyphs(samples=samples, seed=seed % 2**63, scripts=scripts)
        return get_dataset(data).classes(seed, root)  # type: ignore[misc]
    except (ValueError, LookupError, FileNotFoundError, ImportError) as e:
        raise UsageError(f"--data {data}: {e}") from None


def check_class_data(data: str, root: str, descriptions: bool) -> None:
    """Refuse a data set without a class-level view, one whose files or packages are missing,
    and (``descriptions``) the data sets known to describe no class."""
    dataset = get_dataset(data)
    if dataset.classes is None:
        with_view = [n for n in DATASETS.list() if DATASETS.get(n).classes is not None]
        raise UsageError(f"--data: {data!r} has no class-level view (classes with names); use one of {with_view}")
    if descriptions and data == "omniglot":
        raise UsageError("--data: omniglot describes no class; zero-shot learning needs descriptions (glyphs, awa2)")
    problem = dataset.problem(root)
    if problem is not None:
        raise UsageError(f"--data {data}: {problem}")


def glyph_classes(scripts: tuple[str, ...]) -> int:
    """How many glyph classes the ``scripts`` have (without rendering them)."""
    return sum(script_of(ch) in scripts for ch in GLYPH_CLASSES)
