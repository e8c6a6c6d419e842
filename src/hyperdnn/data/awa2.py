"""Animals with Attributes 2 (Xian et al., 2018) from the user's files: 37,322 images of 50
animals as ResNet-101 features, each animal described by 85 attributes; never downloaded.

:func:`load_awa2` reads the release's class and attribute files and its image features (the
``AwA2-features.zip`` part, unpacked into the same folder), from ``root`` or from
``root/Animals_with_Attributes2``::

    classes.txt                      "1<TAB>antelope", one class per line
    predicates.txt                   "1<TAB>black", one attribute per line
    predicate-matrix-binary.txt      50 rows of 85 zeros and ones
    trainclasses.txt, testclasses.txt    class names, one per line (40 and 10)
    Features/ResNet101/AwA2-features.txt   one row of 2,048 numbers per image
    Features/ResNet101/AwA2-labels.txt     the class of each row, 1 to 50

A class's description is the attributes it has, as words (``"black white big ... ground"``),
so the description encoder and the attribute baselines read the same thing; the 10 test
classes are the data set's own held-out classes. The examples are feature vectors ``(2048,)``,
not images; a recipe puts an MLP in front of them instead of a CNN.

It is registered as ``awa2`` in :data:`~hyperdnn.data.DATASETS` (its ``root`` is the folder of the
files, ``"."`` when empty; as a :class:`~hyperdnn.data.Split` each feature vector is a
``(2048, 1, 1)`` "image").

Example::

    >>> from hyperdnn.data.awa2 import find_awa2
    >>> find_awa2("/nonexistent")
    Traceback (most recent call last):
    ...
    FileNotFoundError: AwA2 not found in '/nonexistent' or '/nonexistent/Animals_with_Attributes2': missing classes.txt, predicates.txt, predicate-matrix-binary.txt, testclasses.txt, Features/ResNet101/AwA2-features.txt, Features/ResNet101/AwA2-labels.txt
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hyperdnn.data.classes import ClassData
from hyperdnn.data.registry import Dataset, register_dataset

__all__ = ["AWA2_FILES", "find_awa2", "load_awa2"]

#: the files :func:`load_awa2` reads, relative to the data set's folder
AWA2_FILES = {
    "classes": "classes.txt",
    "predicates": "predicates.txt",
    "matrix": "predicate-matrix-binary.txt",
    "test": "testclasses.txt",
    "features": "Features/ResNet101/AwA2-features.txt",
    "labels": "Features/ResNet101/AwA2-labels.txt",
}


def find_awa2(root: str | Path) -> Path:
    """The folder of AwA2's files: ``root`` or ``root/Animals_with_Attributes2``.

    Raises:
        FileNotFoundError: naming the folders searched and the files missing from the first.
    """
    root = Path(root)
    folders = [root, root / "Animals_with_Attributes2"]
    for folder in folders:
        if all((folder / f).is_file() for f in AWA2_FILES.values()):
            return folder
    missing = [f for f in AWA2_FILES.values() if not (folders[0] / f).is_file() and not (folders[1] / f).is_file()]
    raise FileNotFoundError(
        f"AwA2 not found in {str(folders[0])!r} or {str(folders[1])!r}: missing {', '.join(missing or AWA2_FILES.values())}"
    )


def _numbered(path: Path) -> list[str]:
    """The names of a ``"<index><whitespace><name>"`` file, checked to count 1, 2, 3 ..."""
    names = []
    for i, line in enumerate(t for t in path.read_text().splitlines() if t.strip()):
        index, _, name = line.strip().partition("\t") if "\t" in line else line.strip().partition(" ")
        if index.strip() != str(i + 1) or not name.strip():
            raise ValueError(f"AwA2: line {i + 1} of {path.name} should be '{i + 1}<TAB><name>', got {line!r}")
        names.append(name.strip().replace(" ", "_"))
    return names


def _numbers(path: Path, dtype: type) -> np.ndarray:
    """The whitespace-separated numbers of a file as ``(rows, columns)``."""
    lines = [t for t in path.read_text().splitlines() if t.strip()]
    if not lines:
        raise ValueError(f"AwA2: {path.name} is empty")
    width = len(lines[0].split())
    for i, line in enumerate(lines):
        if len(line.split()) != width:
            raise ValueError(
                f"AwA2: {path.name} has rows of different lengths: the first has {width} numbers, "
                f"row {i + 1} has {len(line.split())}"
            )
    return np.array(" ".join(lines).split(), dtype=dtype).reshape(len(lines), width)


def load_awa2(root: str | Path) -> ClassData:
    """AwA2's ResNet-101 features with the classes' attributes as descriptions.

    Args:
        root: the folder of the files (see the module notes), or the folder above it.

    Returns:
        A :class:`~hyperdnn.data.classes.ClassData`: ``x`` float ``(N, 2048)``, the 50 classes,
        descriptions of their attributes, ``test_classes`` the 10 of ``testclasses.txt``.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a file does not fit the others (naming it and what was expected).
    """
    folder = find_awa2(root)
    files = {k: folder / v for k, v in AWA2_FILES.items()}
    classes, predicates = _numbered(files["classes"]), _numbered(files["predicates"])
    matrix = _numbers(files["matrix"], np.int64)
    if matrix.shape != (len(classes), len(predicates)) or not np.isin(matrix, (0, 1)).all():
        raise ValueError(
            f"AwA2: {AWA2_FILES['matrix']} should be {len(classes)} x {len(predicates)} zeros and ones "
            f"(classes x predicates), got {matrix.shape[0]} x {matrix.shape[1]}"
        )
    index = {name: k for k, name in enumerate(classes)}
    test = [t.strip().replace(" ", "_") for t in files["test"].read_text().splitlines() if t.strip()]
    unknown = [t for t in test if t not in index]
    if unknown:
        raise ValueError(f"AwA2: {AWA2_FILES['test']} names classes not in {AWA2_FILES['classes']}: {unknown}")
    x = _numbers(files["features"], np.float32)
    y = _numbers(files["labels"], np.int64)[:, 0] - 1
    if len(y) != len(x) or y.min() < 0 or y.max() >= len(classes):
        raise ValueError(
            f"AwA2: expected one label in 1..{len(classes)} per feature row ({len(x)} rows), "
            f"got {len(y)} labels from {y.min() + 1} to {y.max() + 1}"
        )
    descriptions = tuple(" ".join(p for p, on in zip(predicates, row) if on) for row in matrix)
    groups = ("",) * len(classes)
    return ClassData(
        "awa2",
        torch.from_numpy(x),
        torch.from_numpy(y),
        tuple(classes),
        groups,
        descriptions,
        tuple(index[t] for t in test),  # fmt: skip
    )


def _locate(root: str) -> None:
    find_awa2(root or ".")


register_dataset(
    Dataset(
        "awa2",
        "Animals with Attributes 2, ResNet-101 features, from local files (--data_root)",
        lambda seed, root: load_awa2(root or ".").to_split(0.2, seed),
        (2048, 1, 1),
        50,
        37_322,
        locate=_locate,
        classes=lambda seed, root: load_awa2(root or "."),
    )
)
