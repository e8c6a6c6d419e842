"""How far a new language can get when only its embedding trains: what a finished
``hyperdnn run adapters`` hypernetwork can generate for the new language, against the
fine-tuned ordinary adapter of the same run.

The recipe learns the new language (Dutch by default) by training one new language embedding
and nothing else. This script asks what any such embedding, or anything the 11 training
languages span, could reach on the new language's held-out words:

* ``training language k``: the adapters the hypernetwork generates for each training language,
  and each per-language adapter of the run, used as they are for the new language (the best one
  chosen on the new language's training words);
* ``new embedding only``: the new embedding trained as in the recipe (Adam on the new words,
  only the embedding moving), started at the recipe's start (the embedding of the training
  language whose generated adapters fit the new words best) and at the mean of the others, with
  larger learning rates and more epochs;
* ``mix of ...``: an unconstrained linear combination of the training languages' adapters, per-language
  and generated (``L`` trained numbers, started at ``1 / L`` each), on the new words.

    .venv/bin/python examples/new_language_reach.py RUN_FOLDER [--epochs 60] [--lrs 0.01,0.05,0.2] [--threads 1]

Writes ``RUN_FOLDER/new_language_reach.json`` and prints a table. Needs the run's ``nlp`` extra
(pyspellchecker, for the same words). Runtime: about two minutes with one thread on the default run.
The measured rows are in docs/adapters.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from hyperdnn.engine.config import build_config, describe
from hyperdnn.engine.model import load_model
from hyperdnn.metrics.language import next_token_nll, weight_set_nll
from hyperdnn.recipes._adapters_data import load_words
from hyperdnn.recipes.adapters import AdaptersConfig

Weights = Mapping[str, torch.Tensor]


def bpc(target, weights: Weights, ids: torch.Tensor) -> float:
    """Bits per character of ``ids`` with one adapter set ``weights`` (each tensor ``(1, ...)``)."""
    return weight_set_nll(target, weights, ids) / math.log(2)


def fit(target, make: Callable[[], Weights], params: list[torch.nn.Parameter], ids: torch.Tensor,
        lr: float, epochs: int, batch_size: int, seed: int) -> None:  # fmt: skip
    """Adam on ``params`` only, minimising the new words' NLL of the adapters ``make()`` gives."""
    opt = torch.optim.Adam(params, lr=lr)
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(ids), generator=order).split(batch_size):
            batch = ids[idx][:, : int((ids[idx] != 0).sum(1).max())]
            sets = {n: w.expand(len(batch), *w.shape[1:]) for n, w in make().items()}
            nll, n = next_token_nll(target.run(sets, batch, mode="per_sample"), batch)
            loss = nll.sum() / n.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def reach(run: Path, epochs: int, lrs: list[float]) -> dict:
    """Every row of the comparison for the finished adapters run in ``run``."""
    saved = json.loads((run / "results.json").read_text())
    if saved.get("recipe") != "adapters":
        sys.exit(
            f"{run}: expected the folder of a finished 'hyperdnn run adapters', got recipe {saved.get('recipe')!r}"
        )
    fields = {f.name for f in describe(AdaptersConfig)}
    cfg = build_config(AdaptersConfig, {k: v for k, v in saved["config"].items() if k in fields})
    words, new = load_words(cfg, saved["seed"]), cfg.new_language
    hm, table = load_model(run, "model"), load_model(run, "adapters")
    for p in [*hm.parameters(), *table.parameters()]:
        p.requires_grad_(False)
    target, hnet, L = hm.target, hm.hypernet, len(cfg.languages)
    test, train = words.test[new], words.new
    reported = saved["metrics"]["bpc"]
    rows = {
        "shared model alone (the run)": reported["shared"][new],
        "ordinary adapter, fine-tuned (the run)": reported["new/adapter"][new],
        "hypernetwork, new embedding only (the run)": reported["new/hnet"][new],
    }
    new_model = load_model(run, "model-new")
    rows["hypernetwork, new embedding only (model-new re-scored)"] = bpc(
        target, new_model.hypernet(torch.tensor([L])), test
    )
    generated = {n: w.detach() for n, w in hnet(torch.arange(L)).items()}
    own = {n: w.detach() for n, w in table(torch.arange(L)).items()}
    for name, bank in (("generated", generated), ("per-language", own)):
        one = lambda k, bank=bank: {n: w[k : k + 1] for n, w in bank.items()}  # noqa: E731
        fits = [bpc(target, one(k), train) for k in range(L)]
        best = min(range(L), key=fits.__getitem__)
        for k, lang in enumerate(cfg.languages):
            rows[f"{lang}'s {name} adapter"] = bpc(target, one(k), test)
        rows[f"the best training language's {name} adapter ({cfg.languages[best]}, chosen on the new words)"] = rows[f"{cfg.languages[best]}'s {name} adapter"]  # fmt: skip
        if name == "generated":
            nearest = best
    cond = hnet.conditioner
    cond.add_tasks(1)
    starts = {"the mean embedding": cond.weight[:L].mean(0).detach().clone(),
              f"{cfg.languages[nearest]}'s embedding": cond.weight[nearest].detach().clone()}  # fmt: skip
    for where, start in starts.items():
        for lr in lrs:
            for n_epochs in sorted({cfg.new_epochs, epochs}):
                emb = cond.embeddings[L]
                with torch.no_grad():
                    emb.copy_(start)
                emb.requires_grad_(True)
                make = lambda: hnet(torch.tensor([L]))  # noqa: E731
                fit(target, make, [emb], train, lr, n_epochs, cfg.batch_size, saved["seed"])
                emb.requires_grad_(False)
                rows[f"new embedding only, from {where}, lr {lr:g} x {n_epochs} epochs"] = bpc(target, make(), test)
    for name, bank in (("generated", generated), ("per-language", own)):
        mix = torch.nn.Parameter(torch.full((L,), 1.0 / L))
        make = lambda bank=bank, mix=mix: {n: torch.einsum("k,k...->...", mix, w)[None] for n, w in bank.items()}  # noqa: E731
        fit(target, make, [mix], train, 2e-2, epochs, cfg.batch_size, saved["seed"])
        rows[f"mix of the {L} {name} adapters ({L} numbers), lr 0.02 x {epochs} epochs"] = bpc(target, make(), test)
    return {"run": str(run), "new_language": new, "seed": saved["seed"], "bpc": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the folder of a finished hyperdnn run adapters")
    parser.add_argument("--epochs", type=int, default=60, help="epochs of the longer fits (default 60)")
    parser.add_argument("--lrs", default="0.01,0.05,0.2", help="learning rates of the new embedding (default 0.01,0.05,0.2)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    if not (args.run / "results.json").is_file():
        parser.error(
            f"expected the folder of a finished hyperdnn run adapters, got {str(args.run)!r} (no results.json)"
        )
    if args.epochs < 1:
        parser.error(f"--epochs: expected an integer >= 1, got {args.epochs}")
    try:
        lrs = [float(x) for x in args.lrs.split(",")]
    except ValueError:
        parser.error(f"--lrs: expected comma-separated numbers, got {args.lrs!r}")
    if not lrs or not all(math.isfinite(x) and x > 0 for x in lrs):
        parser.error(f"--lrs: expected numbers > 0, got {args.lrs!r}")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    result = reach(args.run, args.epochs, lrs)
    (args.run / "new_language_reach.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"| {result['new_language']}: held-out bits per character (seed {result['seed']}) | bpc |\n|---|---:|")
    for name, value in result["bpc"].items():
        print(f"| {name} | {value:.3f} |")


if __name__ == "__main__":
    main()
