"""Hypernetwork-generated adapters across languages (HyperFormer, Karimi Mahabadi et al., ACL
2021; hyper-adapters, Baziotis et al., EMNLP 2022).

No pretrained language model can be loaded here, so this recipe first trains one from scratch:
a small character-level transformer (:class:`~hyperdnn.charlm.CharLM`) on words of 11
languages pooled (pyspellchecker's word lists, :mod:`hyperdnn.data.words`), then freezes it.
Bottleneck adapters go into chosen layers (:func:`~hyperdnn.adapters.insert_adapters`), and a
hypernetwork maps a learned language embedding to every adapter of the model, with one
generator shared by the adapted layers (:class:`~hyperdnn.heads.LowRank`). The same code runs
on a pretrained model of one's own (``tests/test_adapters.py`` does it on a Transformers model).

Baselines, from the same data, seeds and epochs: the shared model alone; the shared model with
a language token (every weight trained further, a learned token per language in place of
``<s>``); one ordinary adapter per language (the same adapters, trained directly:
:class:`~hyperdnn.baselines.weight_table.WeightTable`); a separate model per language. Then a
new language is learned from ``--new-words`` words: the hypernetwork fits only its embedding,
against fine-tuning an ordinary adapter on the same words; each starts from the training language
whose adapters fit the new words best (its embedding, its adapter). Metric: bits per character on held-out words, per language, and parameters per language.

The units of a run, in order (the new language's come last: they start from what the others saved)::

    >>> from hyperdnn.recipes.adapters import AdaptersConfig, plan
    >>> [(u.key, len(u.stages)) for u in plan(AdaptersConfig())]  # doctest: +NORMALIZE_WHITESPACE
    [('shared', 1), ('token', 1), ('adapters', 1), ('hnet', 1), ('separate', 11), ('new/adapter', 1),
     ('new/hnet', 1)]

Run::

    hyperdnn run adapters                       # 11 languages, then Dutch from 500 words
    hyperdnn run adapters --quick               # a smoke run in well under a minute
    hyperdnn run adapters --new-language es --languages ar,de,en,eu,fa,fr,it,lv,nl,pt,ru
    hyperdnn run adapters --words-root ~/FrequencyWords/content/2018  # your word-frequency files

Writes summary.md (bits per character per method and language, parameters), results.json,
bpc.png, and the frozen model (shared.safetensors) and the hypernetwork with it
(model.safetensors; hyperdnn.engine.load_model(out) returns the HyperModel).

Expected (one thread; docs/adapters.md has both seeds): about 2 minutes; on seed 0 the
hypernetwork's adapters 3.259 bits per character against 3.174 for per-language adapters and
3.239 for a language token, and Dutch 3.742 against a fine-tuned adapter's 3.385 (see the doc).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hyperdnn import MLP, HyperModel, HyperNetwork, LowRank, Target, TaskEmbedding, insert_adapters
from hyperdnn.baselines.weight_table import WeightTable
from hyperdnn.charlm import CharLM
from hyperdnn.data.words import SPELLCHECKER_LANGUAGES, find_word_file
from hyperdnn.engine.config import apply_preset, option
from hyperdnn.engine.errors import CheckpointError, UsageError
from hyperdnn.engine.loop import Unit, Work, resumable, run_units
from hyperdnn.engine.model import info_sizes, load_model
from hyperdnn.engine.registry import Recipe, register_recipe
from hyperdnn.engine.run import Outcome, RunContext
from hyperdnn.metrics.language import next_token_nll, weight_set_nll
from hyperdnn.optim import adam
from hyperdnn.recipes._adapters_data import Words, load_words
from hyperdnn.recipes._adapters_report import UNITS, report

TRAIN = ("ar", "de", "en", "es", "eu", "fa", "fr", "it", "lv", "pt", "ru")
QUICK = dict(languages=("de", "en", "es"), new_language="it", train_words=150, test_words=60, new_words=60,
             width=16, layers=1, heads=2, hidden=32, bottleneck=4, rank=2, lang_dim=8, pretrain_epochs=2, adapt_epochs=2,
             new_epochs=3, batch_size=64)  # fmt: skip


# ====================================================================== the config
@dataclass
class AdaptersConfig:
    """Options of ``hyperdnn run adapters`` (see ``hyperdnn run adapters --help``)."""

    languages: tuple[str, ...] = option(TRAIN, "languages the shared model and the adapters learn", nonempty=True, distinct=True)  # fmt: skip
    new_language: str = option("nl", "the language learned afterwards from --new-words words")
    words_root: str = option("", "a folder of word-frequency files (xx_full.txt ...) instead of pyspellchecker's")
    train_words: int = option(2000, "training words per language", low=1)
    test_words: int = option(500, "held-out words per language (bits per character)", low=1)
    new_words: int = option(500, "training words of the new language", low=1)
    max_length: int = option(16, "the longest word, in characters", low=2, high=64)
    width: int = option(64, "model width of the character transformer", low=1)
    layers: int = option(2, "transformer blocks", low=1)
    heads: int = option(4, "attention heads", low=1)
    hidden: int = option(128, "feed-forward width", low=1)
    adapt: tuple[str, ...] = option(("blocks.*.attn.out", "blocks.*.ffn.fc2"), "globs of the Linear layers that get adapters", nonempty=True)  # fmt: skip
    bottleneck: int = option(16, "adapter bottleneck width", low=1)
    rank: int = option(6, "rank of each generated adapter matrix (LowRank head; 0: whole matrices)", low=0)
    lang_dim: int = option(32, "language embedding width of the hypernetwork", low=1)
    trunk: tuple[int, ...] = option((32,), "hidden widths of the hypernetwork's MLP trunk", low=1, nonempty=True)
    gen_hidden: tuple[int, ...] = option((16,), "hidden widths of the shared adapter generator", low=1)
    layer_dim: int = option(8, "layer embedding width of the shared generator", low=1)
    learn_base: bool = option(False, "learn the adapters' shared base theta0 too (generated: theta0 + change)")
    residual_scale: float = option(0.5, "size of the generated adapters at the start, relative to hyperfan", above=0)  # fmt: skip
    pretrain_epochs: int = option(6, "epochs of the shared model (and of each separate model)", low=1)
    adapt_epochs: int = option(3, "epochs of every method on top of the shared model", low=1)
    new_epochs: int = option(20, "epochs on the new language's words", low=1)
    batch_size: int = option(128, "words per minibatch", low=1)
    lr: float = option(3e-3, "Adam learning rate of the shared and separate models", above=0)
    adapt_lr: float = option(3e-3, "Adam learning rate of the language tokens and the per-language adapters", above=0)
    hnet_lr: float = option(2e-2, "Adam learning rate of the hypernetwork", above=0)
    new_lr: float = option(1e-2, "Adam learning rate on the new language", above=0)
    quick: bool = option(
        False,
        "a smoke run in well under a minute (options left at their defaults): 3 languages, 150 words each, a tiny model",
    )

    def __post_init__(self) -> None:
        if self.quick:  # the preset's values where the option keeps its default
            apply_preset(self, QUICK)
        if self.width % self.heads:
            raise ValueError(f"--width: expected a multiple of --heads ({self.heads}), got {self.width}")
        if self.new_language in self.languages:
            raise ValueError(f"--new-language: expected a language outside --languages, got {self.new_language!r}")
        if not self.words_root:
            unknown = [x for x in (*self.languages, self.new_language) if x not in SPELLCHECKER_LANGUAGES]
            if unknown:
                raise ValueError(f"--languages/--new-language: expected languages of {', '.join(SPELLCHECKER_LANGUAGES)} "
                                 f"(or files in --words-root), got {unknown}")  # fmt: skip
        if self.bottleneck > self.width:
            raise ValueError(f"--bottleneck: expected at most --width ({self.width}), got {self.bottleneck}")
        if self.rank > self.bottleneck:
            raise ValueError(f"--rank: expected at most --bottleneck ({self.bottleneck}), got {self.rank}")


# ====================================================================== the methods
def shared_model(cfg: AdaptersConfig, vocab_size: int) -> CharLM:
    return CharLM(vocab_size, cfg.width, cfg.layers, cfg.heads, cfg.hidden, cfg.max_length + 2)


def adapted(cfg: AdaptersConfig, lm: CharLM) -> Target:
    """``lm`` frozen, with zero adapters in the layers of ``--adapt``: the target of the adapters."""
    try:
        return Target(lm, select=insert_adapters(lm, list(cfg.adapt), cfg.bottleneck))
    except ValueError as e:
        raise UsageError(f"--adapt/--bottleneck: {e}") from None


def hypernet(cfg: AdaptersConfig, target: Target, languages: int) -> HyperNetwork:
    head = LowRank(cfg.rank or None, cfg.layer_dim, cfg.gen_hidden)
    return HyperNetwork(target, TaskEmbedding(languages, cfg.lang_dim), MLP(cfg.trunk), head,
                        residual="target", residual_scale=cfg.residual_scale, learn_theta0=cfg.learn_base)  # fmt: skip


#: the batch order each unit draws: the compared methods share theirs (token, adapters, hypernetwork;
#: the two new-language methods), the shared and separate models keep their own
_BATCH_STREAMS = {"token": "adapt", "adapters": "adapt", "hnet": "adapt", "new/adapter": "new", "new/hnet": "new"}


class LanguageWork(Work):
    """One method (a unit): its model as ``logits(ids, lang)``, the parameters it trains, and
    the words it trains on (every language pooled, one language per stage for separate models,
    the new language's words for the ``new/`` units). Each unit after ``shared`` starts from
    the frozen shared model the ``shared`` unit saved; the ``new/`` units from the adapters and
    the hypernetwork their units saved."""

    def __init__(self, ctx: RunContext, cfg: AdaptersConfig, words: Words, unit: Unit):
        self.ctx, self.cfg, self.words, self.key = ctx, cfg, words, unit.key
        self.L, self.V = len(cfg.languages), len(words.lists.vocab)
        ctx.seed_everything("init", unit.key)
        if unit.key in ("shared", "separate"):
            self.lm = shared_model(cfg, self.V)
            self.module: nn.Module = self.lm
        elif unit.key == "token":
            self.lm = self._shared()
            self.tokens = nn.Parameter(self.lm.embed.weight[1].detach().repeat(self.L, 1))  # started at <s>
            self.module = nn.ModuleDict({"lm": self.lm})
            self.module.register_parameter("tokens", self.tokens)
        elif unit.key in ("adapters", "new/adapter"):
            self.target = adapted(cfg, self._shared())
            self.table = WeightTable(self.target.spec, self.L, self.target.default_weights())
            if unit.key == "new/adapter":  # the per-language adapters, then one more at the nearest one
                self.table.load_state_dict(load_model(ctx.out, "adapters").state_dict())
                self.start = self._nearest(lambda: self.table(torch.arange(self.L)))
                self.table.add_entries(1, init=[self.start])
            self.module = self.table
        else:  # hnet, new/hnet
            if unit.key == "hnet":
                self.target = adapted(cfg, self._shared())
                self.hnet = hypernet(cfg, self.target, self.L)
            else:  # the trained hypernetwork; the new language's embedding starts at the nearest language's
                model = load_model(ctx.out, "model")
                self.target, self.hnet = model.target, model.hypernet
                self.start = self._nearest(lambda: self.hnet(torch.arange(self.L)))
                cond = self.hnet.conditioner
                cond.add_tasks(1)
                with torch.no_grad():
                    cond.embeddings[self.L].copy_(cond.embeddings[self.start])
            self.module = self.hnet
        self.new = unit.key.startswith("new/")

    @torch.no_grad()
    def _nearest(self, sets: Callable[[], Mapping[str, torch.Tensor]]) -> int:
        """The training language whose adapters (``sets()``: all, ``(L, ...)``) fit the new words best."""
        weights = sets()
        losses = [weight_set_nll(self.target, {n: w[k : k + 1] for n, w in weights.items()}, self.words.new)
                  for k in range(self.L)]  # fmt: skip
        return min(range(self.L), key=losses.__getitem__)

    def _shared(self) -> CharLM:
        lm = shared_model(self.cfg, self.V)
        lm.load_state_dict(load_model(self.ctx.out, "shared").state_dict())
        return lm

    def parameters_to_train(self) -> list[nn.Parameter]:
        if self.key == "new/adapter":
            return [self.table.entries[self.L]]
        if self.key == "new/hnet":
            return [self.hnet.conditioner.embeddings[self.L]]  # nothing else moves
        return [p for p in self.module.parameters() if p.requires_grad]

    def logits(self, ids: torch.Tensor, lang: torch.Tensor) -> torch.Tensor:
        if self.key == "token":
            return self.lm(ids, start=self.tokens[lang])
        if self.key in ("adapters", "new/adapter"):
            return self.target.run(self.table(lang), ids, mode="per_sample")
        if self.key in ("hnet", "new/hnet"):  # one adapter set per language in the batch
            used, inverse = torch.unique(lang, return_inverse=True)
            sets = self.hnet(used)
            return self.target.run({n: w[inverse] for n, w in sets.items()}, ids, mode="per_sample")
        return self.lm(ids)

    def _data(self, stage: int) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.words
        if self.new:
            return w.new, torch.full((len(w.new),), self.L)
        if self.key == "separate":
            return w.ids[w.lang == stage], w.lang[w.lang == stage]
        return w.ids, w.lang

    def start_stage(self, stage: int, fresh: bool) -> torch.optim.Optimizer:
        if self.key == "separate" and fresh:
            self.ctx.seed_everything("init", "separate", stage)
            self.lm = self.module = shared_model(self.cfg, self.V)
        lrs = {"shared": self.cfg.lr, "separate": self.cfg.lr, "hnet": self.cfg.hnet_lr}
        lr = self.cfg.new_lr if self.new else lrs.get(self.key, self.cfg.adapt_lr)
        self.optimizer = adam(self.parameters_to_train(), lr=lr)
        return self.optimizer

    def steps(self, stage: int) -> int:
        return -(-len(self._data(stage)[0]) // self.cfg.batch_size)

    def train_epoch(self, stage: int, epoch: int, tick) -> dict[str, float]:
        ids, lang = self._data(stage)
        stream = _BATCH_STREAMS.get(self.key, self.key)
        order = torch.randperm(len(ids), generator=self.ctx.generator("batches", stream, stage, epoch))
        total, count = 0.0, 0
        self.module.train()
        for idx in order.split(self.cfg.batch_size):
            batch = ids[idx][:, : int((ids[idx] != 0).sum(1).max())]
            nll, n = next_token_nll(self.logits(batch, lang[idx]), batch)
            loss = nll.sum() / n.sum()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            total, count = total + float(nll.detach().sum()), count + int(n.sum())
            tick()
        return {"bpc": total / count / math.log(2)}

    @torch.no_grad()
    def bpc(self, language: str, lang_id: int) -> float:
        self.module.eval()
        ids = self.words.test[language]
        total, count = 0.0, 0
        for batch in ids.split(512):
            batch = batch[:, : int((batch != 0).sum(1).max())]
            nll, n = next_token_nll(self.logits(batch, torch.full((len(batch),), lang_id)), batch)
            total, count = total + float(nll.sum()), count + int(n.sum())
        return total / count / math.log(2)

    def end_stage(self, stage: int, results: dict[str, Any]) -> str:
        cfg, out = self.cfg, results["bpc"].setdefault(self.key, {})
        if self.new:
            langs = [(cfg.new_language, self.L)]
            results["new_start"][self.key] = cfg.languages[self.start]
        elif self.key == "separate":
            langs = [(cfg.languages[stage], stage)]
        else:
            langs = list(zip(cfg.languages, range(self.L)))
            if self.key == "shared":
                langs.append((cfg.new_language, self.L))  # no language input: it reads any language
        for name, i in langs:
            out[name] = self.bpc(name, i)
        mean = sum(out[x] for x, _ in langs) / len(langs)
        return f"bpc {mean:.3f}" + ("" if len(langs) > 1 else f" ({langs[0][0]})")

    def end_unit(self, results: dict[str, Any]) -> None:
        cfg, L = self.cfg, self.L
        size = lambda ps: sum(p.numel() for p in ps)  # noqa: E731
        lm_size = size(shared_model(cfg, self.V).parameters())
        counts = {
            "shared": (lm_size, 0),
            "token": (lm_size + L * cfg.width, cfg.width),
            "separate": (L * lm_size, lm_size),
            "new/hnet": (cfg.lang_dim, cfg.lang_dim),
        }
        if self.key in ("adapters", "new/adapter"):  # the table: L sets, or the one new set
            one = self.table.spec.numel
            counts[self.key] = (L * one if self.key == "adapters" else one, one)
        if self.key == "hnet":
            total = size(self.hnet.parameters())
            counts["hnet"] = (total, round(total / L))
        trained, per_language = counts[self.key]
        results["params"][self.key] = {"trained": trained, "per_language": per_language}
        info = {"vocab_size": self.V, "languages": L}
        if self.key == "shared":
            self.ctx.save_model(self.lm, "shared", info)
        elif self.key == "adapters":
            self.ctx.save_model(self.table, "adapters", info)
        elif self.key == "hnet":
            self.ctx.save_model(HyperModel(self.hnet, self.target), "model", info)
        elif self.key == "new/hnet":  # the same hypernetwork with one more language embedding
            self.ctx.save_model(HyperModel(self.hnet, self.target), "model-new", {**info, "languages": L + 1})

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return dict(self.module.state_dict()), {}

    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        if self.key == "separate":
            self.lm = self.module = shared_model(self.cfg, self.V)
        self.module.load_state_dict(dict(tensors))


# ====================================================================== the loop
def plan(cfg: AdaptersConfig) -> list[Unit]:
    """The shared model, the methods on top of it, separate models (a language per stage), the new language."""
    epochs = {"shared": cfg.pretrain_epochs, "separate": cfg.pretrain_epochs}
    stages = {"separate": tuple(cfg.languages)}
    return [
        Unit(k, stages.get(k, (cfg.new_language,) if k.startswith("new/") else ("",)),
             epochs.get(k, cfg.new_epochs if k.startswith("new/") else cfg.adapt_epochs))
        for k in UNITS
    ]  # fmt: skip


def run_adapters(cfg: AdaptersConfig, ctx: RunContext) -> Outcome:
    """The ``adapters`` recipe: the shared model, every method, the new language, the report."""
    words = load_words(cfg, ctx.seed)
    ctx.log(
        f"{len(cfg.languages)} languages x {cfg.train_words} training words, {cfg.test_words} test words each; "
        f"new language {cfg.new_language}: {cfg.new_words} words; {len(words.lists.vocab)} symbols"
    )
    done = run_units(
        ctx, plan(cfg), lambda u: LanguageWork(ctx, cfg, words, u), {"bpc": {}, "params": {}, "new_start": {}}
    )
    return report(cfg, ctx, done.results, done.times)


# ====================================================================== saved models and registration
def build_model(cfg: AdaptersConfig, name: str, info: Mapping[str, Any]) -> nn.Module:
    """The untrained module an ``adapters`` run saved as ``name``: ``"shared"`` (the frozen
    :class:`~hyperdnn.charlm.CharLM`), ``"adapters"`` (the per-language adapter table) or
    ``"model"`` (the :class:`~hyperdnn.HyperModel`: hypernetwork and adapted model).

    ``info``: ``vocab_size`` and ``languages`` of the run. Load the trained one with
    :func:`hyperdnn.engine.load_model` (``load_model(out)``: ``model(ids, lang)`` -> logits).
    """
    sizes = info_sizes(info, "vocab_size", "languages")
    if name == "shared":
        return shared_model(cfg, sizes["vocab_size"])
    target = adapted(cfg, shared_model(cfg, sizes["vocab_size"]))
    if name == "adapters":
        return WeightTable(target.spec, sizes["languages"], target.default_weights())
    if name in ("model", "model-new"):
        return HyperModel(hypernet(cfg, target, sizes["languages"]), target)
    raise CheckpointError(f"the adapters recipe saves 'shared', 'adapters', 'model' and 'model-new'; got {name!r}")


def check_config(cfg: AdaptersConfig) -> None:
    """Before anything is written: the adapters fit the model (--adapt names Linear layers,
    --bottleneck fits them) and --words-root holds a file per language."""
    adapted(cfg, shared_model(cfg, 8))
    missing = []
    for lang in (*cfg.languages, cfg.new_language) if cfg.words_root else ():
        try:
            find_word_file(lang, cfg.words_root)
        except FileNotFoundError as e:
            missing.append(str(e))
    if missing:
        raise UsageError("--words-root: " + "; ".join(missing))


RECIPE = register_recipe(
    Recipe(
        name="adapters",
        summary="hypernetwork-generated adapters across 11 languages vs per-language adapters, a language token, separate models",  # fmt: skip
        config=AdaptersConfig,
        run=run_adapters,
        check=check_config,
        build_model=build_model,
        threads=1,
        requires={"spellchecker": "nlp", "matplotlib": "apps"},
        **resumable(plan),
        data_parallel="its loss is a mean over tokens, not over rows",
    )
)
