"""The package version, stated once: ``pyproject.toml``'s ``version``.

An installed package (also an editable one) reads it from its metadata; a source tree
without metadata (``src`` on ``PYTHONPATH``) reads it from the ``pyproject.toml`` beside ``src``.

Example::

    >>> from hyperdnn._version import package_version
    >>> package_version().count(".") >= 1
    True
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

__all__ = ["package_version"]

_PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def package_version(pyproject: Path = _PYPROJECT) -> str:
    """``hyperdnn``'s version from its package metadata, else from ``pyproject`` (the
    ``version`` of its ``[project]`` table), else ``"0+unknown"``."""
    try:
        return metadata.version("hyperdnn")
    except metadata.PackageNotFoundError:
        pass
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return "0+unknown"
    project = re.search(r"(?ms)^\[project\]\s*$(.*?)(?=^\[|\Z)", text)
    found = re.search(r'(?m)^version\s*=\s*"([^"]+)"', project.group(1)) if project else None
    return found.group(1) if found else "0+unknown"
