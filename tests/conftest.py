"""Fixtures shared by the test modules (helpers called with arguments live in tests/helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Run a module's tests on one torch thread (tiny models run fastest there, and seeded
    numbers do not depend on the machine's core count); the setting is restored afterwards.
    Use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# The modules whose tests wait longest on other processes (Flower's SuperLink and Ray actors,
# torchrun, the docs build) come first: with one worker per core (``make test``) they start at once
# instead of ending the run on one worker while the other idles.
FIRST = ("test_federated.py", "test_distributed.py", "test_docs_site.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Collect the :data:`FIRST` modules first, in that order; every other test keeps its place."""
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))
