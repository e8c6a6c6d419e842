"""The glyphs data set: deterministic for a seed, every class it claims is drawn by enough visibly
different faces and looks like no other, descriptions from the Unicode names, the registry's view."""

from __future__ import annotations

import unicodedata
from collections import Counter

import pytest
import torch

from hyperdnn.data import get_dataset
from hyperdnn.data.glyphs import (
    GLYPH_CLASSES,
    MIN_FACES,
    SCRIPTS,
    Jitter,
    describe_letter,
    font_faces,
    load_glyphs,
    render_letters,
    select_glyph_classes,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_renderer_is_deterministic_for_a_seed() -> None:
    a = load_glyphs(samples=6, seed=3, classes="AbЖψՁ")
    b = load_glyphs(samples=6, seed=3, classes="AbЖψՁ")
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    other = load_glyphs(samples=6, seed=4, classes="AbЖψՁ")
    assert not torch.equal(a.x, other.x)
    assert a.x.shape == (30, 1, 28, 28) and a.y.tolist() == [k for k in range(5) for _ in range(6)]
    assert float(a.x.min()) >= 0.0 and float(a.x.max()) <= 1.0
    # every image has ink, and the examples of a class differ (faces and jitter)
    assert bool((a.x.flatten(1).sum(1) > 5).all())
    assert len({tuple(v.flatten().tolist()) for v in a.x[:6]}) == 6


def test_without_jitter_each_sample_is_a_face_of_the_letter() -> None:
    plain = render_letters("g", samples=40, seed=0, jitter=Jitter(0, 0, 0, 0))[0]
    distinct = {tuple((v > 0.5).flatten().tolist()) for v in plain}
    faces = sum(ord("g") in f.code_points for f in font_faces())
    assert len(distinct) == faces == 22  # DejaVu 12, STIX 4, Computer Modern 6: every face once per 22 samples


def test_every_claimed_class_is_drawn_by_enough_faces_and_looks_like_no_other() -> None:
    """select_glyph_classes keeps every class of GLYPH_CLASSES: each is drawn here by at least
    MIN_FACES visibly different faces, and no class is a look-alike of an earlier one."""
    assert len(GLYPH_CLASSES) == len(set(GLYPH_CLASSES)) == 1481
    assert select_glyph_classes(GLYPH_CLASSES) == GLYPH_CLASSES
    scripts = Counter(unicodedata.name(ch).split()[0].lower() for ch in GLYPH_CLASSES)
    assert scripts == {"latin": 879, "greek": 259, "cyrillic": 149, "georgian": 119, "armenian": 75}
    assert MIN_FACES == 8


def test_look_alikes_across_scripts_are_left_out() -> None:
    # Greek capital alpha and Cyrillic a are Latin A and a; accented E's stay apart
    assert select_glyph_classes("AΑАaаEĖÉÈΕЕ") == "AEaÈÉĖ"
    assert "Α" not in GLYPH_CLASSES and "а" not in GLYPH_CLASSES and "É" in GLYPH_CLASSES


def test_descriptions_come_from_the_unicode_names() -> None:
    assert describe_letter("Ǻ") == "script:latin case:capital letter:a mark:ring_above mark:acute"
    assert describe_letter("ᾆ") == "script:greek case:small letter:alpha mark:psili mark:perispomeni mark:ypogegrammeni"
    assert describe_letter("ж") == "script:cyrillic case:small letter:zhe"
    assert describe_letter("ა") == "script:georgian letter:an"  # Mkhedruli has no case
    assert describe_letter("ᴀ") == "script:latin case:small_capital letter:a"
    with pytest.raises(ValueError, match=r"describe_letter: '7' \(DIGIT SEVEN\) is not a letter of latin, greek"):
        describe_letter("7")
    with pytest.raises(ValueError, match="describe_letter: expected one character, got 'ab'"):
        describe_letter("ab")


def test_load_filters_scripts_and_names_bad_input() -> None:
    data = load_glyphs(samples=2, scripts=("armenian",), classes="AաԲ")
    assert data.classes == ("ARMENIAN SMALL LETTER AYB", "ARMENIAN CAPITAL LETTER BEN") and set(data.groups) == {
        "armenian"
    }
    assert data.descriptions == ("script:armenian case:small letter:ayb", "script:armenian case:capital letter:ben")
    with pytest.raises(ValueError, match=r"load_glyphs: unknown scripts \['klingon'\]; expected some of \['latin'"):
        load_glyphs(scripts=("klingon",))
    with pytest.raises(
        ValueError, match=r"load_glyphs: not letters of latin, greek, cyrillic, armenian, georgian: '1\+'"
    ):
        load_glyphs(classes="A1+")
    with pytest.raises(ValueError, match="render_letters: letters must be a string of distinct characters, got 'AA'"):
        render_letters("AA")
    with pytest.raises(ValueError, match=r"render_letters: size must be an int >= 8, got 4"):
        render_letters("A", size=4)
    with pytest.raises(ValueError, match=r"Jitter: rotation must be in \[0, 90\], got 120.0"):
        Jitter(rotation=120)
    assert set(SCRIPTS) == {"latin", "greek", "cyrillic", "armenian", "georgian"}


def test_the_registry_offers_the_glyphs_and_their_classes() -> None:
    d = get_dataset("glyphs")
    assert d.shape == (1, 28, 28) and d.num_classes == len(GLYPH_CLASSES) and d.num_images == 20 * len(GLYPH_CLASSES)
    assert d.classes is not None and d.problem() is None
