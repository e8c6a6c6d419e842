"""Omniglot (Lake et al., 2015) from the user's files: 1,623 handwritten characters of 50
alphabets, 20 drawings each; never downloaded.

:func:`load_omniglot` reads the two parts of the official release, ``images_background``
(30 alphabets, the usual training classes) and ``images_evaluation`` (20 alphabets, the test
classes), each a folder or the zip file of that name, from ``root`` or from
``root/omniglot-py`` (where ``torchvision.datasets.Omniglot(root, download=True)`` puts them)::

    images_background/Latin/character01/0994_01.png     (105x105, black strokes on white)

Drawings are scaled to ``size x size`` (28 by default, as in most few-shot work) and inverted,
so ink is 1. A class is ``"<alphabet>/<character>"``, its group is the alphabet, and the
evaluation alphabets are the data set's own test classes. Omniglot describes no class, so it
serves few-shot learning only.

It is registered as ``omniglot`` in :data:`~hyperdnn.data.DATASETS` (its ``root`` is the folder
of the files, ``"."`` when empty).

Example::

    >>> from hyperdnn.data.omniglot import find_omniglot
    >>> find_omniglot("/nonexistent")
    Traceback (most recent call last):
    ...
    FileNotFoundError: Omniglot not found in '/nonexistent' or '/nonexistent/omniglot-py': expected images_background and/or images_evaluation (folders or .zip files), e.g. from torchvision.datasets.Omniglot(root, download=True)
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from hyperdnn._checks import check_int
from hyperdnn.data.classes import ClassData
from hyperdnn.data.registry import Dataset, register_dataset
from hyperdnn.extras import import_optional

__all__ = ["OMNIGLOT_PARTS", "find_omniglot", "load_omniglot"]

#: the parts of the release, in order: training alphabets, then test alphabets
OMNIGLOT_PARTS = ("images_background", "images_evaluation")


def find_omniglot(root: str | Path) -> dict[str, Path]:
    """The parts of Omniglot under ``root`` or ``root/omniglot-py``: part name -> its folder or
    zip file (the first folder holding any part wins; a folder beats a zip of the same part).

    Raises:
        FileNotFoundError: naming the folders searched and what was expected.
    """
    root = Path(root)
    folders = [root, root / "omniglot-py"]
    for folder in folders:
        found = {}
        for part in OMNIGLOT_PARTS:
            for candidate in (folder / part, folder / f"{part}.zip"):
                if candidate.is_dir() or candidate.is_file():
                    found[part] = candidate
                    break
        if found:
            return found
    raise FileNotFoundError(
        f"Omniglot not found in {str(folders[0])!r} or {str(folders[1])!r}: expected "
        f"{' and/or '.join(OMNIGLOT_PARTS)} (folders or .zip files), e.g. from torchvision.datasets.Omniglot(root, download=True)"
    )


def _drawings(part: str, path: Path) -> dict[tuple[str, str], list[tuple[str, bytes]]]:
    """``(alphabet, character) -> [(file name, PNG bytes), ...]`` of one part."""
    found: dict[tuple[str, str], list[tuple[str, bytes]]] = {}
    if path.is_dir():
        for png in sorted(path.glob("*/*/*.png")):
            found.setdefault((png.parent.parent.name, png.parent.name), []).append((png.name, png.read_bytes()))
    else:
        with zipfile.ZipFile(path) as archive:
            for name in sorted(archive.namelist()):
                parts = PurePosixPath(name).parts
                if name.endswith(".png") and len(parts) >= 3:
                    key = (parts[-3], parts[-2])
                    found.setdefault(key, []).append((parts[-1], archive.read(name)))
    if not found:
        raise FileNotFoundError(f"Omniglot: {str(path)!r} holds no <alphabet>/<character>/<drawing>.png files")
    return found


def load_omniglot(root: str | Path, size: int = 28) -> ClassData:
    """Omniglot from local files, drawings scaled to ``size x size`` with ink as 1.

    Args:
        root: a folder holding ``images_background`` and/or ``images_evaluation`` (folders or
            zip files), or a torchvision root (``root/omniglot-py``).
        size: the image side in pixels.

    Returns:
        A :class:`~hyperdnn.data.classes.ClassData` of float ``(N, 1, size, size)`` images in
        ``[0, 1]``: classes ``"<alphabet>/<character>"`` (background part first), groups the
        alphabets, ``test_classes`` the evaluation part's (``None`` when only one part is there),
        no descriptions.

    Raises:
        FileNotFoundError: the files are not there.
        ValueError: a drawing is not an image.
    """
    check_int("load_omniglot", "size", size, 4)
    image_mod = import_optional("PIL.Image", "apps", "load_omniglot")
    parts = find_omniglot(root)
    images, labels, names, groups, held = [], [], [], [], []
    for part, path in parts.items():
        for (alphabet, character), files in _drawings(part, path).items():
            k = len(names)
            names.append(f"{alphabet}/{character}")
            groups.append(alphabet)
            if part == "images_evaluation":
                held.append(k)
            for file, data in files:
                try:
                    image = image_mod.open(io.BytesIO(data)).convert("L")
                except Exception as e:  # Pillow raises several types for a broken file
                    raise ValueError(f"Omniglot: {alphabet}/{character}/{file} is not an image ({e})") from None
                small = image.resize((size, size), image_mod.Resampling.BOX)
                images.append(1.0 - np.asarray(small, dtype=np.float32) / 255.0)
                labels.append(k)
    x = torch.from_numpy(np.stack(images)).unsqueeze(1)
    both = len(parts) == len(OMNIGLOT_PARTS)
    return ClassData(
        "omniglot", x, torch.tensor(labels), tuple(names), tuple(groups), None, tuple(held) if both else None
    )


def _locate(root: str) -> None:
    find_omniglot(root or ".")


register_dataset(
    Dataset(
        "omniglot",
        "Omniglot from local files (--data_root: images_background, images_evaluation)",
        lambda seed, root: load_omniglot(root or ".").to_split(0.2, seed),
        (1, 28, 28),
        1623,
        32_460,
        requires={"PIL": "apps"},
        locate=_locate,
        classes=lambda seed, root: load_omniglot(root or "."),
    )
)
