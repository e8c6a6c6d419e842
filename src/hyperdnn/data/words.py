"""Word lists of many languages, offline, and the characters that encode them.

* :func:`word_frequencies` - one language's words with their counts: from pyspellchecker's
  word-frequency dictionaries (``ar de en es eu fa fr it lv nl pt ru``, shipped inside the
  package: the ``nlp`` extra), or from the user's own files in ``root`` (any language).
* :func:`find_word_file` - where a language's file is in ``root``.
* :func:`read_frequency_file` - one such file: ``word count`` per line (the FrequencyWords
  lists of OpenSubtitles that pyspellchecker's dictionaries come from, ``xx_full.txt`` or
  ``xx_50k.txt``), or a JSON object ``{word: count}`` (pyspellchecker's ``xx.json.gz``);
  plain or gzip-compressed.
* :func:`load_word_lists` - held-out train and test words per language, drawn reproducibly
  from each language's most frequent words, and the :class:`CharVocab` over all of them.
* :class:`CharVocab` - characters to ids and back; :meth:`CharVocab.encode` makes the padded
  ``(N, T)`` id tensors of a character language model (``<s> w o r d </s>``).

Example::

    >>> from hyperdnn.data.words import CharVocab
    >>> vocab = CharVocab("abc")
    >>> vocab.encode(["cab", "a"])
    tensor([[1, 5, 3, 4, 2],
            [1, 3, 2, 0, 0]])
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hyperdnn.extras import import_optional

__all__ = [
    "SPELLCHECKER_LANGUAGES",
    "CharVocab",
    "WordLists",
    "read_frequency_file",
    "find_word_file",
    "word_frequencies",
    "load_word_lists",
]

#: the languages whose word-frequency dictionaries ship inside pyspellchecker (0.9)
SPELLCHECKER_LANGUAGES = ("ar", "de", "en", "es", "eu", "fa", "fr", "it", "lv", "nl", "pt", "ru")

#: file names looked for in ``root`` for language ``xx``, in order
FILE_PATTERNS = ("{}_full.txt", "{}_50k.txt", "{}.txt", "{}.json.gz", "{}.json", "{}.txt.gz")


def read_frequency_file(path: str | Path) -> dict[str, int]:
    """Words and counts of one file: ``word count`` per line, or a JSON object ``{word: count}``.

    A ``.gz`` file is decompressed first. Lines without a count, or whose count is not an
    integer, are refused with their line number.

    Args:
        path: the file.

    Returns:
        word -> count, in the file's order.

    Raises:
        ValueError: a malformed line or JSON value (naming the file and where).
    """
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    text = raw.decode("utf-8")
    if ".json" in path.name:
        data = json.loads(text)
        if not isinstance(data, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in data.values()):
            raise ValueError(f"{path}: expected a JSON object of word -> integer count")
        return {str(k): int(v) for k, v in data.items()}
    counts: dict[str, int] = {}
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{path}, line {i}: expected 'word count', got {line.strip()!r}")
        counts[parts[0]] = counts.get(parts[0], 0) + int(parts[1])
    return counts


def find_word_file(language: str, root: str) -> Path:
    """The word-frequency file of ``language`` in the folder ``root`` (the first name of
    :data:`FILE_PATTERNS` that exists).

    Raises:
        FileNotFoundError: none of them exists (naming the folder and the names looked for).
    """
    folder = Path(root).expanduser()
    for pattern in FILE_PATTERNS:
        if (folder / pattern.format(language)).is_file():
            return folder / pattern.format(language)
    names = ", ".join(p.format(language) for p in FILE_PATTERNS)
    raise FileNotFoundError(f"no word list for {language!r} in {folder} (looked for {names})")


def word_frequencies(language: str, root: str = "") -> dict[str, int]:
    """The words of ``language`` with their counts.

    Args:
        language: a language code (``"en"``); without ``root`` one of
            :data:`SPELLCHECKER_LANGUAGES`.
        root: a folder of the user's files (``xx_full.txt``, ``xx_50k.txt``, ``xx.txt``,
            ``xx.json.gz`` ...; see :data:`FILE_PATTERNS`); ``""``: pyspellchecker's own.

    Raises:
        ValueError: an unknown language (without ``root``).
        FileNotFoundError: no file for ``language`` in ``root`` (naming the names looked for).
        ImportError: pyspellchecker is not installed (``pip install 'hyperdnn[nlp]'``).
    """
    if root:
        return read_frequency_file(find_word_file(language, root))
    if language not in SPELLCHECKER_LANGUAGES:
        raise ValueError(
            f"unknown language {language!r}: pyspellchecker ships {', '.join(SPELLCHECKER_LANGUAGES)} "
            "(other languages: word-frequency files in --words-root)"
        )
    spellchecker = import_optional("spellchecker", "nlp", "the word lists")
    resource = Path(spellchecker.__file__).parent / "resources" / f"{language}.json.gz"
    return read_frequency_file(resource)


class CharVocab:
    """Characters to ids: ``0`` padding, ``1`` start ``<s>``, ``2`` end ``</s>``, then the
    characters of ``alphabet`` in order.

    Args:
        alphabet: the characters (each once).
    """

    PAD, BOS, EOS = 0, 1, 2

    def __init__(self, alphabet: str):
        if len(set(alphabet)) != len(alphabet):
            raise ValueError(f"CharVocab: every character once, got {alphabet!r}")
        self.alphabet = alphabet
        self.index = {c: i + 3 for i, c in enumerate(alphabet)}

    def __len__(self) -> int:
        return len(self.alphabet) + 3

    def encode(self, words: Sequence[str], length: int | None = None) -> torch.Tensor:
        """``<s> word </s>`` per word, padded with 0: int64 ``(N, length)`` (default: the
        longest word + 2).

        Raises:
            ValueError: a character outside the alphabet, or a word longer than ``length - 2``.
        """
        longest = max((len(w) for w in words), default=0)
        length = longest + 2 if length is None else length
        if longest + 2 > length:
            raise ValueError(f"CharVocab.encode: a word of {longest} characters does not fit length {length}")
        unknown = sorted({c for w in words for c in w} - set(self.index))
        if unknown:
            raise ValueError(f"CharVocab.encode: characters outside the alphabet: {unknown}")
        out = torch.zeros(len(words), length, dtype=torch.int64)
        for i, w in enumerate(words):
            out[i, : len(w) + 2] = torch.tensor([self.BOS, *(self.index[c] for c in w), self.EOS])
        return out


@dataclass(frozen=True)
class WordLists:
    """Train and test words per language, and the characters of all of them.

    Attributes:
        languages: the language codes, in order (a language's position is its id).
        train, test: language -> words (disjoint within a language).
        vocab: the :class:`CharVocab` of every character of every list.
        max_length: the longest word allowed, in characters.
    """

    languages: tuple[str, ...]
    train: Mapping[str, tuple[str, ...]]
    test: Mapping[str, tuple[str, ...]]
    vocab: CharVocab
    max_length: int


def _usable(word: str, max_length: int) -> bool:
    return 2 <= len(word) <= max_length and word.isalpha() and word == word.lower()


def load_word_lists(
    languages: Sequence[str],
    train_words: int | Mapping[str, int],
    test_words: int,
    seed: int = 0,
    root: str = "",
    top: int = 20_000,
    max_length: int = 16,
) -> WordLists:
    """Disjoint train and test words per language, drawn uniformly from its ``top`` most
    frequent usable words (lower-case letters only, 2 to ``max_length`` characters: digits,
    punctuation and names are left out).

    Args:
        languages: language codes (see :func:`word_frequencies`).
        train_words: training words per language (or language -> count).
        test_words: held-out words per language.
        seed: draws the words.
        root: a folder of the user's word-frequency files (``""``: pyspellchecker's).
        top: how many of the most frequent usable words to draw from.
        max_length: the longest word, in characters.

    Raises:
        ValueError: a language with fewer usable words than it needs (naming it and both
            counts), an unknown language.
    """
    counts = train_words if isinstance(train_words, Mapping) else dict.fromkeys(languages, train_words)
    train, test, short = {}, {}, []
    for i, lang in enumerate(languages):
        freq = word_frequencies(lang, root)
        words = [w for w, _ in sorted(freq.items(), key=lambda kv: (-kv[1], kv[0])) if _usable(w, max_length)][:top]
        need = counts[lang] + test_words
        if len(words) < need:
            short.append(f"{lang}: {len(words)} usable words, {need} needed")
            continue
        rng = np.random.default_rng([seed, i, 17])
        pick = rng.choice(len(words), size=need, replace=False)
        drawn = [words[j] for j in pick]
        train[lang], test[lang] = tuple(drawn[: counts[lang]]), tuple(drawn[counts[lang] :])
    if short:
        raise ValueError(f"load_word_lists: not enough words: {'; '.join(short)}")
    alphabet = "".join(sorted({c for lists in (train, test) for ws in lists.values() for w in ws for c in w}))
    return WordLists(tuple(languages), train, test, CharVocab(alphabet), max_length)
