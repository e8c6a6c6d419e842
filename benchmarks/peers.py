"""The peers, hypnettorch 0.0.4 and HyperLight 0.0.5, on the same workloads and shapes.

Optional: ``pip install -e .[peers]``. A peer that is not installed, does not import (a bare
``pip install hypnettorch`` lacks numpy and matplotlib) or does not support a workload is
reported as a row with the reason, never skipped silently.

Each peer runs the way its documentation shows: hypnettorch's hypernetworks return weight
lists that its main networks take through ``forward(x, weights=...)``; HyperLight's
``hypernetize`` turns parameters into external ones set with ``using_externals``. Neither
runs a batch of different weights in one target call, so per-sample (W3) and ensemble (W6)
weights run as the documented Python loop; the ``-vmap`` variants put the peer's target under
``torch.func.vmap``, which works but neither documents.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap

from benchmarks.common import Config, adam, count, cycle, mlp, split, train_step
from benchmarks.harness import Variant

PEERS = {
    "hypnettorch": ("hypnettorch", ["hypnettorch.hnets", "hypnettorch.mnets"]),
    "hyperlight": ("hyperlight", ["hyperlight"]),
}
NO_CHUNKING = "HyperLight 0.0.5 has no chunked hypernetwork (one output layer for every number)"


@dataclass(frozen=True)
class PeerStatus:
    name: str
    available: bool
    version: str | None
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_STATUS: dict[str, PeerStatus] = {}


def status(name: str) -> PeerStatus:
    """Whether peer ``name`` is installed and imports; cached."""
    if name in _STATUS:
        return _STATUS[name]
    dist, modules = PEERS[name]
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        st = PeerStatus(name, False, None, f"not installed (pip install -e '.[peers]' installs {dist})")
    else:
        try:
            for m in modules:
                importlib.import_module(m)
            st = PeerStatus(name, True, version, None)
        except Exception as exc:  # broken installs raise anything from ImportError up
            st = PeerStatus(name, False, version, f"installed but fails to import: {type(exc).__name__}: {exc}")
    _STATUS[name] = st
    return st


def all_status() -> dict[str, dict[str, Any]]:
    return {n: status(n).as_dict() for n in PEERS}


def _guard(name: str, variant: str, cfg: Config, build: Callable[[], Variant]) -> Variant:
    """Build a peer variant, or a row saying why it cannot run."""
    if not cfg.peers:
        return Variant(variant, name, "peer", None, error="peers disabled (--no-peers)")
    st = status(name)
    if not st.available:
        return Variant(variant, name, "peer", None, error=st.error)
    try:
        return build()
    except Exception as exc:
        return Variant(variant, name, "peer", None, error=f"build failed: {type(exc).__name__}: {exc}")


def unsupported(name: str, variant: str, why: str) -> Variant:
    return Variant(variant, name, "peer", None, error=f"not supported: {why}")


# ----------------------------------------------------------------------------- hypnettorch


def _hnt_mlp(sizes):
    from hypnettorch.mnets import MLP

    return MLP(n_in=sizes[0], n_out=sizes[-1], hidden_layers=tuple(sizes[1:-1]), no_weights=True, verbose=False)


def hypnettorch_task(
    cfg: Config, x, y, sizes, *, num_tasks: int, emb: int, hidden, chunk: int | None, chunk_emb: int = 8
) -> Variant:
    """Task-conditioned, generate-once (``HMLP``) or chunked (``ChunkedHMLP``); MLP target."""

    def build() -> Variant:
        from hypnettorch.hnets import HMLP, ChunkedHMLP

        mnet = _hnt_mlp(sizes).to(cfg.device)
        if chunk is None:
            hnet = HMLP(
                mnet.param_shapes,
                uncond_in_size=0,
                cond_in_size=emb,
                layers=hidden,
                num_cond_embs=num_tasks,
                verbose=False,
            )
        else:
            hnet = ChunkedHMLP(
                mnet.param_shapes,
                chunk_size=chunk,
                chunk_emb_size=chunk_emb,
                uncond_in_size=0,
                cond_in_size=emb,
                layers=hidden,
                num_cond_embs=num_tasks,
                verbose=False,
            )
        hnet = hnet.to(cfg.device)
        opt = adam(hnet.parameters(), cfg)
        task = cycle(num_tasks)
        step = train_step(opt, lambda: F.cross_entropy(mnet.forward(x, weights=hnet(cond_id=task())), y))
        kind = "HMLP" if chunk is None else f"ChunkedHMLP, {hnet.num_chunks} chunks"
        return Variant(
            "hypnettorch", "hypnettorch", "peer", step, count(hnet.parameters()), f"{kind}, mnets.MLP", documented=True
        )

    return _guard("hypnettorch", "hypnettorch", cfg, build)


def hypnettorch_lenet(cfg: Config, x_nchw, y, *, num_tasks: int, emb: int, hidden, chunk: int, chunk_emb: int = 8):
    """Chunked hypernet for hypnettorch's own LeNet ('mnist_large'), which takes HWC input."""

    def build() -> Variant:
        from hypnettorch.hnets import ChunkedHMLP
        from hypnettorch.mnets import LeNet

        mnet = LeNet(in_shape=(28, 28, 1), num_classes=10, arch="mnist_large", no_weights=True, verbose=False)
        mnet = mnet.to(cfg.device)
        hnet = ChunkedHMLP(
            mnet.param_shapes,
            chunk_size=chunk,
            chunk_emb_size=chunk_emb,
            uncond_in_size=0,
            cond_in_size=emb,
            layers=hidden,
            num_cond_embs=num_tasks,
            verbose=False,
        ).to(cfg.device)
        x_hwc = x_nchw.permute(0, 2, 3, 1).reshape(x_nchw.shape[0], -1).contiguous()
        opt = adam(hnet.parameters(), cfg)
        task = cycle(num_tasks)
        step = train_step(opt, lambda: F.cross_entropy(mnet.forward(x_hwc, weights=hnet(cond_id=task())), y))
        return Variant(
            "hypnettorch",
            "hypnettorch",
            "peer",
            step,
            count(hnet.parameters()),
            f"ChunkedHMLP, {hnet.num_chunks} chunks, mnets.LeNet (its HWC input layout)",
            documented=True,
        )

    return _guard("hypnettorch", "hypnettorch", cfg, build)


def hypnettorch_per_sample(cfg: Config, x, y, sizes, *, hidden) -> list[Variant]:
    """Data-conditioned: the documented loop over samples, and the target under vmap."""
    out = []
    for mode in ("loop", "vmap"):

        def build(mode=mode) -> Variant:
            from hypnettorch.hnets import HMLP

            mnet = _hnt_mlp(sizes).to(cfg.device)
            hnet = HMLP(
                mnet.param_shapes,
                uncond_in_size=sizes[0],
                cond_in_size=0,
                layers=hidden,
                num_cond_embs=0,
                verbose=False,
            ).to(cfg.device)
            opt = adam(hnet.parameters(), cfg)
            shapes = [tuple(s) for s in mnet.param_shapes]
            if mode == "loop":

                def fwd():
                    ws = hnet(uncond_input=x, ret_format="sequential")
                    return torch.cat([mnet.forward(x[b : b + 1], weights=ws[b]) for b in range(x.shape[0])])

                note = "HMLP; Python loop over samples"
            else:
                one = vmap(lambda w, xb: mnet.forward(xb.unsqueeze(0), weights=list(w)).squeeze(0))

                def fwd():
                    return one(split(hnet(uncond_input=x, ret_format="flattened"), shapes), x)

                note = "HMLP; its mnets.MLP under torch.func.vmap (not documented)"
            step = train_step(opt, lambda: F.cross_entropy(fwd(), y))
            return Variant(
                f"hypnettorch-{mode}",
                "hypnettorch",
                "peer",
                step,
                count(hnet.parameters()),
                note,
                documented=mode == "loop",
            )

        out.append(_guard("hypnettorch", f"hypnettorch-{mode}", cfg, build))
    return out


def hypnettorch_ensemble(cfg: Config, x, y, sizes, *, k: int, noise: int, hidden, chunk: int, chunk_emb: int = 8):
    """Noise-conditioned chunked hypernet, K weight sets on one batch: loop over K, and vmap."""
    out = []
    for mode in ("loop", "vmap"):

        def build(mode=mode) -> Variant:
            from hypnettorch.hnets import ChunkedHMLP

            mnet = _hnt_mlp(sizes).to(cfg.device)
            hnet = ChunkedHMLP(
                mnet.param_shapes,
                chunk_size=chunk,
                chunk_emb_size=chunk_emb,
                uncond_in_size=noise,
                cond_in_size=0,
                layers=hidden,
                num_cond_embs=0,
                verbose=False,
            ).to(cfg.device)
            opt = adam(hnet.parameters(), cfg)
            shapes = [tuple(s) for s in mnet.param_shapes]
            yk = y.repeat(k)
            if mode == "loop":

                def fwd():
                    z = torch.randn(k, noise, device=cfg.device)
                    ws = hnet(uncond_input=z, ret_format="sequential")
                    return torch.cat([mnet.forward(x, weights=w) for w in ws])

                note = f"ChunkedHMLP, {hnet.num_chunks} chunks; Python loop over the K weight sets"
            else:
                one = vmap(lambda w: mnet.forward(x, weights=list(w)))

                def fwd():
                    z = torch.randn(k, noise, device=cfg.device)
                    return one(split(hnet(uncond_input=z, ret_format="flattened"), shapes)).flatten(0, 1)

                note = f"ChunkedHMLP, {hnet.num_chunks} chunks; its mnets.MLP under torch.func.vmap"
            step = train_step(opt, lambda: F.cross_entropy(fwd(), yk))
            return Variant(
                f"hypnettorch-{mode}",
                "hypnettorch",
                "peer",
                step,
                count(hnet.parameters()),
                note,
                documented=mode == "loop",
            )

        out.append(_guard("hypnettorch", f"hypnettorch-{mode}", cfg, build))
    return out


# ----------------------------------------------------------------------------- HyperLight


def _hl_mlp(sizes, device):
    import hyperlight as hl

    main = mlp(sizes).to(device)
    return hl.hypernetize(main, modules=[m for m in main if isinstance(m, nn.Linear)])


def _hl_hypernet(input_shapes, main, hidden, device):
    import hyperlight as hl

    # encoding=None keeps the input width the same as every other library's
    return hl.HyperNet(
        input_shapes=input_shapes,
        output_shapes=main.external_shapes(),
        hidden_sizes=list(hidden),
        encoding=None,
        fc_kws={"nonlinearity": "ReLU"},
    ).to(device)


def hyperlight_task(cfg: Config, x, y, sizes, *, num_tasks: int, emb: int, hidden) -> Variant:
    """Task-conditioned generate-once: a task embedding table feeding ``hl.HyperNet``."""

    def build() -> Variant:
        main = _hl_mlp(sizes, cfg.device)
        hnet = _hl_hypernet({"task": (emb,)}, main, hidden, cfg.device)
        table = nn.Embedding(num_tasks, emb).to(cfg.device)
        params = list(hnet.parameters()) + list(table.parameters())
        opt = adam(params, cfg)
        task = cycle(num_tasks)

        def fwd():
            with main.using_externals(hnet(task=table.weight[task()])):
                return main(x)

        step = train_step(opt, lambda: F.cross_entropy(fwd(), y))
        note = "HyperNet + nn.Embedding task table; using_externals"
        return Variant("hyperlight", "hyperlight", "peer", step, count(params), note, documented=True)

    return _guard("hyperlight", "hyperlight", cfg, build)


def hyperlight_per_sample(cfg: Config, x, y, sizes, *, hidden) -> list[Variant]:
    """Data-conditioned: the documented loop over samples, and the target under vmap."""
    out = []
    for mode in ("loop", "vmap"):

        def build(mode=mode) -> Variant:
            main = _hl_mlp(sizes, cfg.device)
            hnet = _hl_hypernet({"x": (sizes[0],)}, main, hidden, cfg.device)
            opt = adam(hnet.parameters(), cfg)
            if mode == "loop":

                def fwd():
                    ws = hnet(x=x)
                    outs = []
                    for b in range(x.shape[0]):
                        with main.using_externals({k: v[b] for k, v in ws.items()}):
                            outs.append(main(x[b : b + 1]))
                    return torch.cat(outs)

                note = "HyperNet; Python loop over samples with using_externals"
            else:

                def one(w, xb):
                    with main.using_externals(w):
                        return main(xb.unsqueeze(0)).squeeze(0)

                batched = vmap(one)

                def fwd():
                    return batched(hnet(x=x), x)

                note = "HyperNet; its hypernetized target under torch.func.vmap (not documented)"
            step = train_step(opt, lambda: F.cross_entropy(fwd(), y))
            return Variant(
                f"hyperlight-{mode}",
                "hyperlight",
                "peer",
                step,
                count(hnet.parameters()),
                note,
                documented=mode == "loop",
            )

        out.append(_guard("hyperlight", f"hyperlight-{mode}", cfg, build))
    return out
