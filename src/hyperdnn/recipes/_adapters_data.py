"""The data of ``hyperdnn run adapters``: the word lists of every language, encoded.

:func:`load_words` reads them with :func:`~hyperdnn.data.words.load_word_lists` (pyspellchecker's
lists, or the files of ``--words-root``) and encodes them with the lists' character vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from hyperdnn.data.words import WordLists, load_word_lists
from hyperdnn.engine.errors import UsageError

if TYPE_CHECKING:
    from hyperdnn.recipes.adapters import AdaptersConfig

__all__ = ["Words", "load_words"]


@dataclass(frozen=True)
class Words:
    """The encoded words: the training languages pooled, the new language's and every test set."""

    lists: WordLists
    ids: torch.Tensor  # (N, T) training words of every language of --languages
    lang: torch.Tensor  # (N,) their language ids
    new: torch.Tensor  # (new_words, T)
    test: dict[str, torch.Tensor]  # language -> (test_words, T)


def load_words(cfg: AdaptersConfig, seed: int) -> Words:
    """The words of ``cfg``'s languages and new language, split by ``seed``, encoded
    (:class:`Words`); a word list that cannot be loaded is a :class:`~hyperdnn.engine.errors.UsageError`."""
    counts = {**dict.fromkeys(cfg.languages, cfg.train_words), cfg.new_language: cfg.new_words}
    try:
        lists = load_word_lists((*cfg.languages, cfg.new_language), counts, cfg.test_words, seed, cfg.words_root,
                                max_length=cfg.max_length)  # fmt: skip
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    enc = lambda words: lists.vocab.encode(words, cfg.max_length + 2)  # noqa: E731
    parts = [enc(lists.train[x]) for x in cfg.languages]
    lang = torch.cat([torch.full((len(p),), i) for i, p in enumerate(parts)])
    test = {x: enc(lists.test[x]) for x in lists.languages}
    return Words(lists, torch.cat(parts), lang, enc(lists.train[cfg.new_language]), test)
