"""Adapters in a frozen target and the LowRank head: a zero adapter changes nothing, the
target's own weights never move, generated adapters equal plain PyTorch (per sample, shared, on
a Hugging Face Transformers model built from a config), and bad input is one clear error that
leaves the module as it was. The ``adapters`` recipe: its word lists (also from files the test
writes), bits per character against plain PyTorch, the quick run end to end (the frozen model
stays the shared one, a new language trains only its embedding), resume, bad input."""

from __future__ import annotations

import copy
import gzip
import importlib.util
import io
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hyperdnn import (
    MLP,
    Adapter,
    HyperModel,
    HyperNetwork,
    LowRank,
    Target,
    TaskEmbedding,
    insert_adapters,
    remove_adapters,
)
from hyperdnn.adapters import adapter_layers
from hyperdnn.charlm import CharLM
from hyperdnn.data.words import CharVocab, find_word_file, load_word_lists, read_frequency_file
from hyperdnn.engine import load_model, run_command
from hyperdnn.metrics.language import bits_per_character, next_token_nll
from hyperdnn.recipes._adapters_data import load_words
from hyperdnn.recipes.adapters import AdaptersConfig
from tests.helpers import interrupt_then_resume, load, one_set, random_weights, state

pytestmark = pytest.mark.usefixtures("one_thread")


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 3))


def test_a_new_or_zero_adapter_leaves_the_output_unchanged() -> None:
    net = mlp()
    x = torch.randn(5, 6)
    before = net(x)
    names = insert_adapters(net, ["0", "2"], bottleneck=4, lora_rank=2)
    torch.testing.assert_close(net(x), before, atol=0, rtol=0)  # up and lora_b start at zero
    target = Target(net, select=names)
    zeros = {n: torch.zeros(5, *s) for n, s in target.spec.shapes.items()}  # per sample: all-zero adapters
    torch.testing.assert_close(target(zeros, x), before, atol=1e-6, rtol=1e-6)


def test_adapter_terms_equal_the_plain_formula() -> None:
    torch.manual_seed(1)
    layer = nn.Linear(6, 8)
    insert_adapters(layer_holder := nn.Sequential(layer), "0", bottleneck=3, lora_rank=2, activation="tanh")
    a: Adapter = layer.adapter
    with torch.no_grad():
        for p in a.parameters():
            p.normal_()
    x = torch.randn(4, 6)
    y = F.linear(x, layer.weight, layer.bias)
    plain = y + F.linear(torch.tanh(F.linear(y, a.down.weight, a.down.bias)), a.up.weight, a.up.bias)
    plain = plain + x @ a.lora_a.weight.T @ a.lora_b.weight.T
    torch.testing.assert_close(layer_holder(x), plain)


def test_generated_adapters_equal_plain_pytorch_per_sample_and_shared() -> None:
    net = mlp()
    names = insert_adapters(net, "*", bottleneck=3, lora_rank=2)
    target = Target(net, select=names)
    weights = random_weights(target.spec, 4, seed=3)
    x = torch.randn(4, 6)
    out = target(weights, x)  # grouped Linear kernels inside the hooks
    reference = torch.cat([load(net, one_set(weights, i))(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        Target(net, select=names, per_sample="vmap")(weights, x), reference, atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(target(one_set(weights, 1), x), load(net, one_set(weights, 1))(x), atol=1e-5, rtol=1e-5)
    exported = target.materialize(one_set(weights, 2))  # a deep copy uses its own adapters
    torch.testing.assert_close(exported(x), load(net, one_set(weights, 2))(x), atol=1e-5, rtol=1e-5)


def test_training_a_hypernetwork_never_moves_the_frozen_target() -> None:
    net = mlp()
    own = state(net)
    names = insert_adapters(net, ["0", "2"], bottleneck=4)
    assert all(not p.requires_grad for n, p in net.named_parameters() if n not in names)
    target = Target(net, select=names)
    model = HyperModel(HyperNetwork(target, TaskEmbedding(3, 4), MLP((16,)), LowRank(rank=2, hidden=(8,))), target)
    opt = model.adam(lr=1e-2)
    x, y, tasks = torch.randn(12, 6), torch.randint(0, 3, (12,)), torch.arange(12) % 3
    first = None
    for _ in range(20):
        loss = F.cross_entropy(model(x, tasks), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
    after = state(net)
    for key, value in own.items():
        assert torch.equal(after[key], value), key
    assert all(p.grad is None for p in net.parameters())
    assert set(after) - set(own) == set(names)  # the target's own keys unchanged: a checkpoint still loads
    net.load_state_dict(own, strict=False)


def test_lowrank_head_shares_a_generator_across_layers_and_bounds_the_rank() -> None:
    def hnet(layers: int, rank: int | None) -> HyperNetwork:
        torch.manual_seed(0)
        net = nn.Sequential(*[nn.Linear(16, 16) for _ in range(layers)])
        names = insert_adapters(net, "*", bottleneck=8)
        return HyperNetwork(Target(net, select=names), TaskEmbedding(2, 4), MLP((8,)), LowRank(rank, embed_dim=4))

    size = lambda h: sum(p.numel() for p in h.head.parameters())  # noqa: E731
    assert size(hnet(6, 2)) - size(hnet(2, 2)) == 2 * 4 * 4  # only the 4 new layer embeddings per group
    assert size(hnet(2, 2)) < size(hnet(2, None))  # factors: fewer numbers to emit
    w = hnet(2, 2)(1)["1.adapter.down.weight"]
    assert w.shape == (8, 16) and int(torch.linalg.matrix_rank(w)) == 2
    assert int(torch.linalg.matrix_rank(hnet(2, None)(1)["1.adapter.down.weight"])) == 8
    with pytest.raises(ValueError, match=r"LowRank: rank 9 is larger than a generated matrix.*'0.adapter.down.weight' \(8 x 16: at most 8\)"):  # fmt: skip
        hnet(2, 9)
    with pytest.raises(ValueError, match="LowRank: rank must be None or an int >= 1, got 0"):
        LowRank(0)


def test_the_adapter_head_works_on_a_transformers_model_built_from_a_config() -> None:
    import transformers  # the nlp extra (make test installs every extra)

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    bert = transformers.BertModel(config).eval()  # randomly initialised: nothing downloaded
    own = state(bert)
    ids = torch.randint(0, 40, (3, 7))
    before = bert(input_ids=ids).last_hidden_state
    names = insert_adapters(bert, "encoder.layer.?.output.dense", bottleneck=4, lora_rank=2)
    assert adapter_layers(bert) == ["encoder.layer.0.output.dense", "encoder.layer.1.output.dense"]
    torch.testing.assert_close(bert(input_ids=ids).last_hidden_state, before, atol=0, rtol=0)
    target = Target(bert, select=names)
    hnet = HyperNetwork(target, TaskEmbedding(3, 4), MLP((16,)), LowRank(rank=2, hidden=(8,)))
    weights = hnet(torch.arange(3))
    out = target(weights, input_ids=ids).last_hidden_state  # one adapter set per sequence
    for i in range(3):
        plain = load(bert, one_set(weights, i))(input_ids=ids[i : i + 1]).last_hidden_state
        torch.testing.assert_close(out[i : i + 1], plain, atol=1e-5, rtol=1e-5)
    out.pow(2).mean().backward()
    assert all(p.grad is not None for p in hnet.parameters())
    after = state(bert)
    assert all(torch.equal(after[k], v) for k, v in own.items()) and not any(
        p.grad is not None for p in bert.parameters()
    )


def _frozen_snapshot(net: nn.Module) -> tuple:
    return (
        list(state(net)),
        [p.requires_grad for p in net.parameters()],
        [dict(m._forward_hooks) for m in net.modules()],
    )


@pytest.mark.parametrize(
    "layers,kwargs,message",
    [
        ("blocks.*", {}, r"no Linear layer matches \['blocks.\*'\]; the module's Linear layers are \['0', '2', '4'\]"),
        ("*", {"bottleneck": 0}, r"bottleneck must be in \[1, 12\] for '0' \(Linear 6 -> 12\).*got 0; .*for '4'"),
        (
            "4",
            {"bottleneck": 4},
            r"bottleneck must be in \[1, 3\] for '4' \(Linear 12 -> 3\) \(at most its output width\), got 4",
        ),  # fmt: skip
        ("0", {"bottleneck": None, "lora_rank": 7}, r"lora_rank must be in \[1, 6\] for '0' \(Linear 6 -> 12\).*got 7"),
        ("0", {"bottleneck": None, "lora_rank": None}, "expected a bottleneck, a lora_rank or both, got neither"),
    ],
)
def test_bad_adapters_are_one_clear_error_and_change_nothing(layers, kwargs, message) -> None:
    net = mlp()
    snapshot = _frozen_snapshot(net)
    with pytest.raises(ValueError, match=message):
        insert_adapters(net, layers, **kwargs)
    assert _frozen_snapshot(net) == snapshot and adapter_layers(net) == []


def test_adapters_refuse_attention_internals_and_a_second_insertion() -> None:
    enc = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    with pytest.raises(ValueError, match=r"'self_attn.out_proj' is inside a MultiheadAttention, which never calls it"):
        insert_adapters(enc, "*out_proj", bottleneck=2)
    insert_adapters(enc, "linear2", bottleneck=2)
    with pytest.raises(ValueError, match=r"'linear2' already has an attribute 'adapter'"):
        insert_adapters(enc, "linear2", bottleneck=2)
    with pytest.raises(TypeError, match="layers must be a glob or a non-empty list of globs, got \\[\\]"):
        insert_adapters(enc, [], bottleneck=2)


def test_remove_adapters_restores_the_module() -> None:
    net = mlp()
    x = torch.randn(3, 6)
    before = net(x)
    insert_adapters(net, "*", bottleneck=2, freeze=False)
    with torch.no_grad():
        net[2].adapter.up.weight.fill_(0.5)
    assert not torch.allclose(net(x), before)
    assert remove_adapters(net) == ["0", "2", "4"]
    torch.testing.assert_close(net(x), before, atol=0, rtol=0)
    assert adapter_layers(net) == [] and all(not m._forward_hooks for m in net.modules())
    assert copy.deepcopy(net)(x).shape == (3, 3)


# ---------------------------------------------------------------------- the word lists
def test_word_lists_from_frequency_files_the_test_writes(tmp_path) -> None:
    (tmp_path / "xx_50k.txt").write_text("the 90\nhouse 40\nHouse 7\nlo 30\ncat2 9\nmoon 20\nsun 12\nsea 11\n")
    with gzip.open(tmp_path / "yy.json.gz", "wt", encoding="utf-8") as fh:
        json.dump({"uno": 5, "dos": 4, "tres": 3, "el": 9, "mar": 2, "sol": 1}, fh)
    assert read_frequency_file(tmp_path / "xx_50k.txt")["house"] == 40
    assert find_word_file("yy", str(tmp_path)).name == "yy.json.gz"
    lists = load_word_lists(["xx", "yy"], 3, 2, seed=1, root=str(tmp_path), max_length=5)
    assert set(lists.train["xx"]) | set(lists.test["xx"]) <= {"the", "house", "lo", "moon", "sun", "sea"}
    assert len(lists.train["yy"]) == 3 and not set(lists.train["yy"]) & set(lists.test["yy"])
    ids = lists.vocab.encode(lists.train["xx"], 7)
    assert ids.shape == (3, 7) and (ids[:, 0] == CharVocab.BOS).all()
    (tmp_path / "zz.txt").write_text("word 3\nbroken\n")
    with pytest.raises(ValueError, match=r"zz.txt, line 2: expected 'word count', got 'broken'"):
        read_frequency_file(tmp_path / "zz.txt")
    with pytest.raises(FileNotFoundError, match=r"no word list for 'qq' in .* \(looked for qq_full.txt"):
        find_word_file("qq", str(tmp_path))
    with pytest.raises(ValueError, match=r"not enough words: xx: 6 usable words, 9 needed"):
        load_word_lists(["xx"], 7, 2, root=str(tmp_path), max_length=5)


def test_bits_per_character_and_the_causal_model_against_plain_pytorch() -> None:
    torch.manual_seed(0)
    lm = CharLM(12, width=8, layers=1, heads=2, max_length=6).eval()
    ids = torch.tensor([[1, 5, 7, 2, 0, 0], [1, 4, 2, 0, 0, 0]])
    logits = lm(ids)
    plain = sum(F.cross_entropy(logits[b, : n - 1], ids[b, 1:n], reduction="sum") for b, n in enumerate((4, 3))) / (
        5 * math.log(2)
    )
    assert math.isclose(bits_per_character(logits, ids), float(plain.detach()), rel_tol=1e-6)
    changed = ids.clone()
    changed[0, 3] = 9  # a later character never changes an earlier prediction
    torch.testing.assert_close(lm(changed)[0, :3], logits[0, :3])


# ---------------------------------------------------------------------- the recipe
def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    return run_command(argv, stdout=io.StringIO(), stderr=err), err.getvalue()


QUICK = ["adapters", "--quick", "--progress", "false"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("adapters") / "quick"
    code, err = _run([*QUICK, "--out", str(out)])
    assert code == 0, err
    return out


def test_quick_run_reports_every_method_and_saves_its_models(quick_run: Path) -> None:
    res = json.loads((quick_run / "results.json").read_text())["metrics"]
    assert set(res["bpc"]) == {"shared", "token", "adapters", "hnet", "separate", "new/adapter", "new/hnet"}
    assert set(res["bpc"]["hnet"]) == {"de", "en", "es"} and set(res["bpc"]["new/hnet"]) == {"it"}
    assert all(0 < v < 8 for by_lang in res["bpc"].values() for v in by_lang.values())
    assert res["parameters"]["new/hnet"]["trained"] == 8  # the new language's embedding alone
    assert {"hnet_vs_adapters", "hnet_params_vs_adapters", "hnet_vs_token", "new_hnet_vs_adapter"} <= set(res["checks"])
    assert (quick_run / "bpc.png").exists() and "hypernetwork adapters" in (quick_run / "summary.md").read_text()


def test_the_run_trains_adapters_only_and_a_new_language_only_its_embedding(quick_run: Path) -> None:
    shared = load_model(quick_run, "shared").state_dict()
    model, new = load_model(quick_run, "model"), load_model(quick_run, "model-new")
    lm = {k.removeprefix("target.module."): v for k, v in model.state_dict().items() if k.startswith("target.module.")}
    for key, value in shared.items():  # the frozen model inside the hypernetwork's target is the shared one
        assert torch.equal(lm[key], value), key
    before, after = model.state_dict(), new.state_dict()
    assert set(after) - set(before) == {"hypernet.conditioner.embeddings.3"}
    assert all(torch.equal(after[k], v) for k, v in before.items())  # nothing but the new embedding moved
    languages = torch.stack([model.hypernet.conditioner.embeddings[i] for i in range(3)])
    assert not torch.allclose(after["hypernet.conditioner.embeddings.3"], languages.mean(0))  # it was trained


def test_the_new_language_starts_at_the_training_language_that_fits_its_words_best(quick_run: Path) -> None:
    cfg = AdaptersConfig(quick=True)
    words = load_words(cfg, 0).new
    words = words[:, : int((words != 0).sum(1).max())]
    model, table = load_model(quick_run, "model"), load_model(quick_run, "adapters")
    starts = json.loads((quick_run / "results.json").read_text())["metrics"]["new_start"]
    with torch.no_grad():
        for key, sets in (("new/hnet", model.hypernet(torch.arange(3))), ("new/adapter", table(torch.arange(3)))):
            losses = []
            for k in range(3):
                one = {n: w[k : k + 1].expand(len(words), *w.shape[1:]) for n, w in sets.items()}
                nll, n = next_token_nll(model.target.run(one, words, mode="per_sample"), words)
                losses.append(float(nll.sum() / n.sum()))
            assert starts[key] == cfg.languages[min(range(3), key=losses.__getitem__)], (key, losses)
    summary = (quick_run / "summary.md").read_text()
    assert f"| {starts['new/hnet']}'s adapters |" in summary


def _example(name: str):
    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"examples_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_the_new_language_reach_example_rescores_the_run_and_writes_every_row(quick_run: Path, tmp_path: Path, capsys) -> None:  # fmt: skip
    run = tmp_path / "run"
    shutil.copytree(quick_run, run)
    reach = _example("new_language_reach")
    reach.main([str(run), "--epochs", "2", "--lrs", "0.05"])
    rows = json.loads((run / "new_language_reach.json").read_text())["bpc"]
    reported = json.loads((run / "results.json").read_text())["metrics"]["bpc"]["new/hnet"]["it"]
    assert rows["hypernetwork, new embedding only (model-new re-scored)"] == pytest.approx(reported, abs=1e-5)
    assert {"de's generated adapter", "es's per-language adapter", "new embedding only, from the mean embedding, lr 0.05 x 3 epochs",
            "new embedding only, from the mean embedding, lr 0.05 x 2 epochs", "mix of the 3 per-language adapters (3 numbers), lr 0.02 x 2 epochs"} <= set(rows)  # fmt: skip
    assert all(0 < v < 8 for v in rows.values())
    assert "| it: held-out bits per character (seed 0) | bpc |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # not a run folder: argparse's one line, exit status 2
        reach.main([str(tmp_path)])
    assert e.value.code == 2 and "no results.json" in capsys.readouterr().err


@pytest.mark.parametrize("stop_after", [2, 6])  # inside the pretraining's units, inside separate models
def test_resume_ends_with_the_same_results(tmp_path: Path, monkeypatch, quick_run: Path, stop_after: int) -> None:
    resumed = interrupt_then_resume(monkeypatch, QUICK[0], QUICK[1:], tmp_path / "run", stop_after)
    full = json.loads((quick_run / "results.json").read_text())["metrics"]
    assert resumed["bpc"] == full["bpc"] and resumed["parameters"] == full["parameters"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--new-language", "xx"], r"--languages/--new-language: expected languages of ar, de.*got \['xx'\]"),
        (["--new-language", "de"], "--new-language: expected a language outside --languages, got 'de'"),
        (
            ["--adapt", "blocks.*.nope"],
            r"no Linear layer matches \['blocks.\*.nope'\]; the module's Linear layers are \['blocks.0.attn.qkv'",
        ),  # fmt: skip
        (["--bottleneck", "0"], "--bottleneck: expected an int >= 1, got 0"),
        (["--bottleneck", "24"], r"--bottleneck: expected at most --width \(16\), got 24"),
        (["--rank", "5"], r"--rank: expected at most --bottleneck \(4\), got 5"),
        (["--words-root", "."], r"--words-root: no word list for 'de' in"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(tmp_path: Path, argv, message) -> None:
    out = tmp_path / "bad"
    code, err = _run([*QUICK, *argv, "--out", str(out)])
    assert code == 2 and re.search(message, err), err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
