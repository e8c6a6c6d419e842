"""Class-level data for few- and zero-shot learning: ClassData, class splits, episodes (a test class
never reaches a training episode), and the Omniglot and AwA2 loaders on tiny files written here."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from hyperdnn.data import ClassData, EpisodeSampler, get_dataset, split_classes
from hyperdnn.data.awa2 import load_awa2
from hyperdnn.data.episodes import check_support
from hyperdnn.data.omniglot import find_omniglot, load_omniglot


def toy(classes: int = 12, per_class: int = 6) -> ClassData:
    """Class ``k``'s examples are filled with the number ``k`` (so an example names its class)."""
    y = torch.arange(classes).repeat_interleave(per_class)
    x = y.float().view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()
    words = [f"colour:{'red' if k % 2 else 'blue'} shape:{k % 3} size:{k % 4}" for k in range(classes)]
    return ClassData("toy", x, y, tuple(f"c{k}" for k in range(classes)), ("",) * classes, tuple(words))


# ---------------------------------------------------------------------- ClassData and splits
def test_class_data_checks_its_fields() -> None:
    data = toy()
    assert data.num_classes == 12 and data.shape == (1, 2, 2) and data.counts().tolist() == [6] * 12
    assert data.vocabulary[:2] == ("colour:blue", "colour:red") and data.attributes().sum(1).tolist() == [3.0] * 12
    sub = data.subset([5, 2])
    assert sub.classes == ("c5", "c2") and sub.y.tolist() == [1] * 6 + [0] * 6 and sub.x[0, 0, 0, 0] == 2.0
    with pytest.raises(ValueError, match=r"ClassData 'x': labels must lie in \[0, 2\), got min 0, max 2"):
        ClassData("x", torch.zeros(3, 2), torch.tensor([0, 1, 2]), ("a", "b"), ("", ""))
    with pytest.raises(ValueError, match=r"ClassData 'x': every class needs an example; none for \['b'\]"):
        ClassData("x", torch.zeros(2, 2), torch.tensor([0, 0]), ("a", "b"), ("", ""))
    with pytest.raises(ValueError, match=r"ClassData 'x': every description needs a word; empty for \['b'\]"):
        ClassData("x", torch.zeros(2, 2), torch.tensor([0, 1]), ("a", "b"), ("", ""), ("red", "  "))
    with pytest.raises(ValueError, match=r"expected one entry per class \(2\), got \{'groups': 1\}"):
        ClassData("x", torch.zeros(2, 2), torch.tensor([0, 1]), ("a", "b"), ("",))
    with pytest.raises(TypeError, match=r"y must be int64 of shape \(2,\), got dtype torch.int32"):
        ClassData("x", torch.zeros(2, 2), torch.tensor([0, 1], dtype=torch.int32), ("a", "b"), ("", ""))
    split = data.to_split(0.5, seed=0)
    assert split.shape == (1, 2, 2) and len(split.y_train) == len(split.y_test) == 36 and split.num_classes == 12


def test_split_classes_holds_out_disjoint_classes() -> None:
    data = toy()
    train, test = split_classes(data, 0.25, seed=1)
    assert len(test) == 3 and sorted(train + test) == list(range(12)) and not set(train) & set(test)
    assert split_classes(data, 0.25, seed=1) == (train, test) and split_classes(data, 0.25, seed=2) != (train, test)
    with pytest.raises(
        ValueError, match="split_classes: test must hold out between 1 and 11 of the 12 classes, got 12"
    ):
        split_classes(data, 12)


def test_seen_words_holds_out_only_classes_described_by_training_words() -> None:
    data = toy()
    words = [set(d.split()) for d in data.descriptions]
    for seed in range(5):
        train, test = split_classes(data, 6, seed=seed, seen_words=True)
        seen = set().union(*(words[c] for c in train))
        assert test and all(words[c] <= seen for c in test)
    # a word only one class has keeps that class in training
    lonely = ClassData("x", torch.zeros(3, 1), torch.tensor([0, 1, 2]), ("a", "b", "c"), ("",) * 3, ("red", "red", "red blue"))  # fmt: skip
    assert all(2 not in split_classes(lonely, 1, seed=s, seen_words=True)[1] for s in range(5))


# ---------------------------------------------------------------------- episodes
def test_episode_sampling_never_lets_a_test_class_into_training() -> None:
    data = toy(classes=20, per_class=8)
    train, test = split_classes(data, 0.3, seed=0)
    sampler = EpisodeSampler(data, train, ways=5, shots=2, queries=3)
    g = torch.Generator().manual_seed(0)
    seen_classes: set[int] = set()
    for _ in range(300):
        ep = sampler.sample(g)
        # every example is filled with its class: none may be a test class
        values = set(ep.support.flatten().tolist()) | set(ep.query.flatten().tolist())
        assert not values & set(map(float, test)) and set(ep.classes.tolist()) <= set(train)
        # the labels point at the right episode classes
        assert torch.equal(ep.support[:, :, 0, 0, 0], ep.classes.float()[:, None].expand(5, 2))
        assert torch.equal(ep.query[:, 0, 0, 0], ep.classes.float()[ep.query_labels])
        seen_classes |= set(ep.classes.tolist())
    assert seen_classes == set(train)  # and every training class is used
    ep = sampler.sample(torch.Generator().manual_seed(7))
    again = sampler.sample(torch.Generator().manual_seed(7))
    assert torch.equal(ep.support, again.support) and torch.equal(ep.classes, again.classes)
    assert ep.support_labels().tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_episode_sampler_and_support_checks_name_the_problem() -> None:
    data = toy(classes=6, per_class=4)
    with pytest.raises(ValueError, match="EpisodeSampler: ways must be at most the 3 classes it samples from, got 4"):
        EpisodeSampler(data, [0, 1, 2], ways=4, shots=1, queries=1)
    with pytest.raises(ValueError, match=r"every class needs shots \+ queries = 5 examples; 3 have fewer \(fewest 4\)"):
        EpisodeSampler(data, [0, 1, 2], ways=2, shots=1, queries=4)
    with pytest.raises(ValueError, match=r"expected distinct class indices in \[0, 6\), got \[9\]"):
        EpisodeSampler(data, [0, 9], ways=2, shots=1, queries=1)
    with pytest.raises(ValueError, match=r"f: expected a support set of 5 classes, \(5, shots, 1, 2, 2\), got \(4, 1, 1, 2, 2\) \(4 classes\)"):  # fmt: skip
        check_support("f", torch.zeros(4, 1, 1, 2, 2), 5, (1, 2, 2))
    with pytest.raises(
        ValueError, match=r"expected a support set of 5 classes, \(5, shots, 1, 2, 2\), got \(5, 1, 1, 3, 3\)"
    ):
        check_support("f", torch.zeros(5, 1, 1, 3, 3), 5, (1, 2, 2))


# ---------------------------------------------------------------------- Omniglot from tiny files
def _png(path: Path, stroke: int) -> bytes:
    from PIL import Image

    a = np.full((105, 105), 255, np.uint8)
    a[:, stroke * 10 : stroke * 10 + 10] = 0  # a black bar on white, where the stroke is
    Image.fromarray(a).convert("1").save(path)
    return path.read_bytes()


def _omniglot(root: Path, zipped: bool) -> None:
    parts = {"images_background": {"Latin": 2, "Greek": 1}, "images_evaluation": {"Tifinagh": 2}}
    stroke = 0
    for part, alphabets in parts.items():
        files = {}
        for alphabet, n in alphabets.items():
            for c in range(1, n + 1):
                folder = root / ("tmp" if zipped else part) / alphabet / f"character{c:02d}"
                folder.mkdir(parents=True)
                for d in range(3):
                    files[f"{part}/{alphabet}/character{c:02d}/{stroke:04d}_{d:02d}.png"] = _png(
                        folder / f"{d}.png", stroke
                    )
                stroke += 1
        if zipped:
            with zipfile.ZipFile(root / f"{part}.zip", "w") as z:
                for name, data in files.items():
                    z.writestr(name, data)


@pytest.mark.parametrize("zipped", [False, True])
def test_omniglot_loads_folders_and_zips(tmp_path: Path, zipped: bool) -> None:
    _omniglot(tmp_path, zipped)
    data = load_omniglot(tmp_path, size=21)
    assert data.classes == ("Greek/character01", "Latin/character01", "Latin/character02", "Tifinagh/character01", "Tifinagh/character02")  # fmt: skip
    assert data.groups == ("Greek", "Latin", "Latin", "Tifinagh", "Tifinagh") and data.test_classes == (3, 4)
    assert data.x.shape == (15, 1, 21, 21) and data.counts().tolist() == [3] * 5 and data.descriptions is None
    # ink is 1: the bar of stroke s covers columns 10 s .. 10 s + 9 of 105, i.e. 2 s .. 2 s + 1 of 21
    bar = data.x[data.y == 0][0, 0]  # Greek (class 0, sorted first) was written after Latin's two: stroke 2
    assert torch.allclose(bar[:, 4:6], torch.ones(21, 2)) and float(bar.sum()) == pytest.approx(42.0)


def test_omniglot_without_files_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Omniglot not found in .* expected images_background and/or images_evaluation"):  # fmt: skip
        find_omniglot(tmp_path)
    assert get_dataset("omniglot").problem(str(tmp_path)).startswith("Omniglot not found in")
    (tmp_path / "images_background").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no <alphabet>/<character>/<drawing>.png files"):
        load_omniglot(tmp_path)


# ---------------------------------------------------------------------- AwA2 from tiny files
def _awa2(root: Path, matrix: str = "1 0 1\n0 1 1\n1 1 0\n") -> None:
    (root / "Features" / "ResNet101").mkdir(parents=True)
    (root / "classes.txt").write_text("1\tzebra\n2\tpolar+bear\n3\tmole\n")
    (root / "predicates.txt").write_text("1\tstripes\n2\twhite\n3\tbig\n")
    (root / "predicate-matrix-binary.txt").write_text(matrix)
    (root / "testclasses.txt").write_text("mole\n")
    (root / "Features" / "ResNet101" / "AwA2-features.txt").write_text("0.5 1 2 3\n4 5 6 7\n8 9 10 11\n1 1 1 1\n")
    (root / "Features" / "ResNet101" / "AwA2-labels.txt").write_text("1\n2\n3\n3\n")


def test_awa2_loads_features_attributes_and_its_test_classes(tmp_path: Path) -> None:
    _awa2(tmp_path / "Animals_with_Attributes2")
    data = load_awa2(tmp_path)
    assert data.classes == ("zebra", "polar+bear", "mole") and data.test_classes == (2,)
    assert data.descriptions == ("stripes big", "white big", "stripes white")
    assert data.x.shape == (4, 4) and data.x[0].tolist() == [0.5, 1, 2, 3] and data.y.tolist() == [0, 1, 2, 2]
    assert data.to_split(0.5, 0).shape == (4, 1, 1)


def test_awa2_files_that_do_not_fit_are_named(tmp_path: Path) -> None:
    _awa2(tmp_path, matrix="1 0 1\n0 1 1\n")
    with pytest.raises(ValueError, match=r"predicate-matrix-binary.txt should be 3 x 3 zeros and ones .*, got 2 x 3"):
        load_awa2(tmp_path)
    (tmp_path / "predicate-matrix-binary.txt").write_text("1 0 1\n0 1 1\n1 1 0\n")
    # a long row and a short one with the right total: refused, not shifted into alignment
    (tmp_path / "Features" / "ResNet101" / "AwA2-features.txt").write_text("0.5 1 2 3\n4 5 6 7 8\n9 10 11\n1 1 1 1\n")
    with pytest.raises(ValueError, match="AwA2-features.txt has rows of different lengths: the first has 4 numbers, row 2 has 5"):  # fmt: skip
        load_awa2(tmp_path)
    (tmp_path / "Features" / "ResNet101" / "AwA2-labels.txt").unlink()
    with pytest.raises(FileNotFoundError, match="AwA2 not found in .*: missing Features/ResNet101/AwA2-labels.txt"):
        load_awa2(tmp_path)
