"""Every snippet of docs/taxonomy.md runs, and the page covers every category."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

PAGE = Path(__file__).resolve().parents[1] / "docs" / "taxonomy.md"
TEXT = PAGE.read_text()
SNIPPETS = re.findall(r"```python\n(.*?)```", TEXT, flags=re.S)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_page_has_snippets():
    assert len(SNIPPETS) >= 10


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_snippet_runs(index, capsys):
    torch.manual_seed(0)
    exec(compile(SNIPPETS[index], f"{PAGE.name}:snippet{index}", "exec"), {"__name__": "__taxonomy__"})


@pytest.mark.parametrize(
    "category",
    [
        "task-conditioned",
        "data-conditioned",
        "noise-conditioned",
        "generate once",
        "multi-head",
        "component-wise",
        "chunk-wise",
        "static inputs",
        "dynamic inputs",
        "static outputs",
        "dynamic outputs",
        "MLP",
        "CNN",
        "RNN",
        "attention",
        "static hypernetwork",
        "dynamic hypernetwork",
        "Which design for which problem",
        "Are the components related?",
        "Is data-adaptivity needed?",
        "Does the architecture change?",
        "Is parameter efficiency the goal?",
        "Is uncertainty needed?",
    ],
)
def test_every_category_is_covered(category):
    assert category.lower() in TEXT.lower()
