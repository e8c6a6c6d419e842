"""The workloads W0-W6: the same shapes for every library, every variant of each.

==== =====================================================================================
W0   static MLP 784-100-100-10, batch 128 (the baseline)
W1   task-conditioned generate-once hypernet (task embedding 32, hidden 100-100) producing
     all 89,610 weights of W0's target
W2   the same target from a chunked hypernet (chunk 4,000, chunk embedding 8, hidden
     100-100; 23 chunks)
W3   data-conditioned per-sample weights: input 64, batch 256, hypernet 64-128-(the 2,410
     parameters of a 64-32-10 MLP), a different target per sample
W4   LeNet-like CNN target (431,080 parameters) on 28x28, batch 64, from a chunked hypernet
     (108 chunks), NCHW and channels-last input
W5   scaling: the W2 hypernet generating MLP targets of 1e5, 1e6, 1e7 (GPU: 1e8) parameters
W6   noise-conditioned ensemble: K=16 weight sets of W0's target from the W2 chunked
     hypernet (noise 32), evaluated on one shared batch of 128
==== =====================================================================================

Every variant is one training step (zero_grad + forward + cross-entropy + backward + Adam
step). Roles: ``static`` is the target trained directly; ``reference`` is the hand-written
plain-PyTorch hypernet of the same algorithm (the bar: "best hand-written"); ``ours`` is
hyperdnn; ``peer`` is hypnettorch or HyperLight.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from benchmarks import peers
from benchmarks.common import (
    Config,
    LeNet,
    PlainChunked,
    adam,
    classification_data,
    compiled_train_step,
    count,
    cycle,
    hyperfan_scale,
    lenet_forward,
    mlp,
    mlp_forward,
    mlp_numel,
    mlp_shapes,
    plain_once,
    split,
    train_step,
)
from benchmarks.harness import Variant, sync_fn
from hyperdnn import MLP, Chunked, DataEncoder, HyperModel, HyperNetwork, Noise, Once, Target, TaskEmbedding

W0_SIZES = (784, 100, 100, 10)
W3_SIZES = (64, 32, 10)
NUM_TASKS = 10
TASK_EMB = 32
HIDDEN = (100, 100)
CHUNK = 4000
CHUNK_EMB = 8
ENSEMBLE_K = 16
NOISE = 32
W5_SIZES = {"cpu": (10**5, 10**6, 10**7), "cuda": (10**5, 10**6, 10**7, 10**8)}
W5_QUICK = (10**5, 10**6)


@dataclass
class Built:
    """A workload ready to time."""

    variants: list[Variant]
    baseline: str = "static"
    info: dict[str, Any] = field(default_factory=dict)
    extra: Callable[[], dict[str, Any]] | None = None  # measured after timing (W5: weight generation)


@dataclass(frozen=True)
class Workload:
    """A named workload; ``parts(cfg)`` lists (key, build) pairs, one per timed group (W5 has
    one per target size, every other workload one)."""

    name: str
    title: str
    parts: Callable[[Config], list[tuple[str, Callable[[], Built]]]]


def _one(name: str, build: Callable[[Config], Built]) -> Callable[[Config], list[tuple[str, Callable[[], Built]]]]:
    return lambda cfg: [(name, lambda: build(cfg))]


def size_label(n: int) -> str:
    """1e5 for 100000."""
    e = round(math.log10(n))
    return f"1e{e}" if 10**e == n else str(n)


def _ours_adam(model: HyperModel, cfg: Config) -> torch.optim.Optimizer:
    if cfg.optimizer == "fused":
        return model.adam(lr=1e-3)
    return model.adam(lr=1e-3, fused=False, foreach=cfg.optimizer == "foreach")


def _static_mlp(cfg: Config, x, y, sizes, name: str = "static") -> Variant:
    net = mlp(sizes).to(cfg.device)
    step = train_step(adam(net.parameters(), cfg), lambda: F.cross_entropy(net(x), y))
    return Variant(name, "torch", "static", step, count(net.parameters()), f"MLP {'-'.join(map(str, sizes))}")


def _compiled(
    cfg: Config,
    name: str,
    library: str,
    role: str,
    opt: torch.optim.Optimizer,
    loss: Callable[..., torch.Tensor],
    params: int | list[torch.Tensor],
    note: str,
    inputs: Callable[[], tuple] = lambda: (0,),
) -> Variant:
    """The compiled twin ``<name>-compiled`` of a variant: ``loss(*inputs())`` under
    ``torch.compile(fullgraph=True)`` (:func:`compiled_train_step`), on its own fresh model."""
    n = params if isinstance(params, int) else count(params)
    mode = f", mode={cfg.compile_mode!r}" if cfg.compile_mode else ""
    step = compiled_train_step(cfg, opt, loss, inputs)
    return Variant(f"{name}-compiled", library, role, step, n, f"{note}; torch.compile{mode}", compiled=True)


def _seeded(cfg: Config) -> None:
    torch.manual_seed(cfg.seed)


# ----------------------------------------------------------------------------- W0


def build_w0(cfg: Config) -> Built:
    x, y = classification_data(cfg, 128, 784)
    _seeded(cfg)
    variants = [_static_mlp(cfg, x, y, W0_SIZES)]
    if cfg.compiled:
        net = mlp(W0_SIZES).to(cfg.device)
        loss = lambda: F.cross_entropy(net(x), y)  # noqa: E731
        opt = adam(net.parameters(), cfg)
        variants.append(
            _compiled(cfg, "static", "torch", "static", opt, loss, list(net.parameters()), "MLP", inputs=tuple)
        )
    return Built(variants)


# ----------------------------------------------------------------------------- W1 / W2


def _task_variants(cfg: Config, chunked: bool) -> Built:
    x, y = classification_data(cfg, 128, 784)
    numel = mlp_numel(W0_SIZES)
    shapes = mlp_shapes(W0_SIZES)
    scale = hyperfan_scale(shapes, cfg.device)
    _seeded(cfg)
    variants = [_static_mlp(cfg, x, y, W0_SIZES)]

    # hand-written: task table -> MLP -> every number (W1) or chunk generator (W2); W2 also
    # times the hyperfan scale (the same math as hyperdnn)
    def reference(scaled: bool) -> tuple[list[nn.Parameter], Callable[[int], torch.Tensor]]:
        table = nn.Parameter(torch.randn(NUM_TASKS, TASK_EMB, device=cfg.device))
        if chunked:
            gen = PlainChunked(TASK_EMB, numel, CHUNK, CHUNK_EMB, HIDDEN).to(cfg.device)
        else:
            gen = plain_once(TASK_EMB, HIDDEN, numel).to(cfg.device)

        def loss(t: int) -> torch.Tensor:
            flat = gen(table[t].unsqueeze(0))[0]
            return F.cross_entropy(mlp_forward(x, split(flat * scale if scaled else flat, shapes)), y)

        return [table, *gen.parameters()], loss

    how = f"{-(-numel // CHUNK)} chunks, split first layer" if chunked else "one Linear to every number"
    for suffix, scaled in (("", False), ("-hyperfan", True)) if chunked else (("", False),):
        params, loss = reference(scaled)
        task = cycle(NUM_TASKS)
        step = train_step(adam(params, cfg), lambda loss=loss, task=task: loss(task()))
        note = how + (", times the hyperfan scale" if scaled else "")
        variants.append(Variant("torch" + suffix, "torch", "reference", step, count(params), note))

    # hyperdnn
    def ours() -> HyperModel:
        target = Target(mlp(W0_SIZES)).to(cfg.device)
        if chunked:
            hnet = HyperNetwork(target, TaskEmbedding(NUM_TASKS, TASK_EMB), MLP(()), Chunked(CHUNK, CHUNK_EMB, HIDDEN))
        else:
            hnet = HyperNetwork(target, TaskEmbedding(NUM_TASKS, TASK_EMB), MLP(HIDDEN), Once())
        return HyperModel(hnet, target).to(cfg.device)

    model = ours()
    task2 = cycle(NUM_TASKS)
    step = train_step(_ours_adam(model, cfg), lambda: F.cross_entropy(model(x, task2()), y))
    note = "TaskEmbedding -> " + ("MLP(()) -> Chunked" if chunked else "MLP -> Once") + "; Target.shared"
    variants.append(Variant("hyperdnn", "hyperdnn", "ours", step, model.parameter_counts()["trainable"], note))

    if cfg.compiled:
        # one task id for every step: TaskEmbedding keeps a parameter per task, and a compiled
        # graph is specialised on the parameter it reads (ten tasks would be ten graphs)
        for suffix, scaled in (("", False), ("-hyperfan", True)) if chunked else (("", False),):
            params, loss = reference(scaled)
            ref_note = how + (", times the hyperfan scale" if scaled else "") + "; task 0 every step"
            variants.append(
                _compiled(cfg, "torch" + suffix, "torch", "reference", adam(params, cfg), loss, params, ref_note)
            )
        model_c = ours()
        variants.append(
            _compiled(
                cfg,
                "hyperdnn",
                "hyperdnn",
                "ours",
                _ours_adam(model_c, cfg),
                lambda t: F.cross_entropy(model_c(x, t), y),
                model_c.parameter_counts()["trainable"],
                note + "; task 0 every step",
            )
        )

    chunk = CHUNK if chunked else None
    variants.append(
        peers.hypnettorch_task(cfg, x, y, W0_SIZES, num_tasks=NUM_TASKS, emb=TASK_EMB, hidden=HIDDEN, chunk=chunk)
    )
    if chunked:
        variants.append(peers.unsupported("hyperlight", "hyperlight", peers.NO_CHUNKING))
    else:
        variants.append(peers.hyperlight_task(cfg, x, y, W0_SIZES, num_tasks=NUM_TASKS, emb=TASK_EMB, hidden=HIDDEN))
    return Built(variants, info={"generated": numel})


def build_w1(cfg: Config) -> Built:
    return _task_variants(cfg, chunked=False)


def build_w2(cfg: Config) -> Built:
    return _task_variants(cfg, chunked=True)


# ----------------------------------------------------------------------------- W3


def build_w3(cfg: Config) -> Built:
    x, y = classification_data(cfg, 256, 64)
    shapes = mlp_shapes(W3_SIZES)
    numel = mlp_numel(W3_SIZES)
    hidden = (128,)
    _seeded(cfg)
    variants = [_static_mlp(cfg, x, y, W3_SIZES)]

    # hand-written, batched matmul: sample b runs with weight set b; also with the hyperfan
    # scale that hyperdnn applies to every generated number (the same math, by hand)
    scale = hyperfan_scale(shapes, cfg.device)

    def baddbmm(scaled: bool) -> tuple[nn.Module, Callable[[], torch.Tensor]]:
        gen = plain_once(64, hidden, numel).to(cfg.device)

        def loss() -> torch.Tensor:
            flat = gen(x) * scale if scaled else gen(x)
            w1, b1, w2, b2 = split(flat, shapes)
            h = torch.relu(torch.baddbmm(b1.unsqueeze(1), x.unsqueeze(1), w1.transpose(1, 2)))
            out = torch.baddbmm(b2.unsqueeze(1), h, w2.transpose(1, 2)).squeeze(1)
            return F.cross_entropy(out, y)

        return gen, loss

    compiled: list[Variant] = []
    for suffix, scaled in (("", False), ("-hyperfan", True)):
        gen, loss = baddbmm(scaled)
        step = train_step(adam(gen.parameters(), cfg), loss)
        note = "torch.baddbmm per layer" + (", times the hyperfan scale" if scaled else "")
        variants.append(Variant("torch-baddbmm" + suffix, "torch", "reference", step, count(gen.parameters()), note))
        if cfg.compiled:
            gen, loss = baddbmm(scaled)
            opt = adam(gen.parameters(), cfg)
            params = list(gen.parameters())
            compiled.append(
                _compiled(cfg, "torch-baddbmm" + suffix, "torch", "reference", opt, loss, params, note, tuple)
            )

    # hand-written, the target module under vmap(functional_call)
    gen2 = plain_once(64, hidden, numel).to(cfg.device)
    net = mlp(W3_SIZES).to(cfg.device)
    names = [n for n, _ in net.named_parameters()]
    one = vmap(lambda w, xb: functional_call(net, w, (xb.unsqueeze(0),)).squeeze(0))

    def vmap_loss():
        return F.cross_entropy(one(dict(zip(names, split(gen2(x), shapes))), x), y)

    step = train_step(adam(gen2.parameters(), cfg), vmap_loss)
    variants.append(
        Variant("torch-vmap", "torch", "reference", step, count(gen2.parameters()), "vmap(functional_call(target))")
    )

    # hyperdnn: the grouped fast path, and the whole target under vmap
    def ours(mode: str) -> HyperModel:
        target = Target(mlp(W3_SIZES), per_sample=mode).to(cfg.device)
        # built on CPU, moved afterwards: the calibration example lives where the hypernet is built
        hnet = HyperNetwork(target, DataEncoder(nn.Identity(), 64, example_input=x.cpu()), MLP(hidden), Once())
        return HyperModel(hnet, target).to(cfg.device)

    for mode in ("auto", "vmap"):
        model = ours(mode)
        step = train_step(_ours_adam(model, cfg), lambda model=model: F.cross_entropy(model(x), y))
        name = "hyperdnn" if mode == "auto" else "hyperdnn-vmap"
        note = "DataEncoder -> MLP -> Once; Target.per_sample " + (
            "(grouped baddbmm path)" if mode == "auto" else "(per_sample='vmap')"
        )
        variants.append(Variant(name, "hyperdnn", "ours", step, model.parameter_counts()["trainable"], note))
        if cfg.compiled and mode == "auto":
            model_c = ours(mode)
            loss = lambda model_c=model_c: F.cross_entropy(model_c(x), y)  # noqa: E731
            n = model_c.parameter_counts()["trainable"]
            compiled.append(_compiled(cfg, name, "hyperdnn", "ours", _ours_adam(model_c, cfg), loss, n, note, tuple))
    variants += compiled

    variants += peers.hypnettorch_per_sample(cfg, x, y, W3_SIZES, hidden=hidden)
    variants += peers.hyperlight_per_sample(cfg, x, y, W3_SIZES, hidden=hidden)
    return Built(variants, info={"generated_per_sample": numel})


# ----------------------------------------------------------------------------- W4


def build_w4(cfg: Config) -> Built:
    x, y = classification_data(cfg, 64, 1, 28, 28)
    x_cl = x.to(memory_format=torch.channels_last)
    numel = sum(math.prod(s) for s in LeNet.SHAPES)
    _seeded(cfg)
    variants = []
    for layout, xx in (("", x), ("-channels-last", x_cl)):
        net = LeNet().to(cfg.device)
        step = train_step(adam(net.parameters(), cfg), lambda net=net, xx=xx: F.cross_entropy(net(xx), y))
        variants.append(Variant("static" + layout, "torch", "static", step, count(net.parameters()), "LeNet"))
    scale = hyperfan_scale(LeNet.SHAPES, cfg.device)

    def reference(xx: torch.Tensor, scaled: bool) -> tuple[list[nn.Parameter], Callable[[int], torch.Tensor]]:
        table = nn.Parameter(torch.randn(NUM_TASKS, TASK_EMB, device=cfg.device))
        gen = PlainChunked(TASK_EMB, numel, CHUNK, CHUNK_EMB, HIDDEN).to(cfg.device)

        def loss(t: int) -> torch.Tensor:
            flat = gen(table[t].unsqueeze(0))[0]
            ws = split(flat * scale if scaled else flat, LeNet.SHAPES)
            return F.cross_entropy(lenet_forward(xx, ws), y)

        return [table, *gen.parameters()], loss

    compiled: list[Variant] = []
    chunks = -(-numel // CHUNK)
    for layout, xx, scaled in (
        ("", x, False),
        ("-channels-last", x_cl, False),
        ("-channels-last-hyperfan", x_cl, True),
    ):
        params, loss = reference(xx, scaled)
        task = cycle(NUM_TASKS)
        note = f"{chunks} chunks; " + ("channels-last input" if xx is x_cl else "NCHW input")
        note += ", times the hyperfan scale" if scaled else ""
        step = train_step(adam(params, cfg), lambda loss=loss, task=task: loss(task()))
        variants.append(Variant("torch" + layout, "torch", "reference", step, count(params), note))
        if cfg.compiled and xx is x_cl:  # compiled: the channels-last variants only
            params, loss = reference(xx, scaled)
            note += "; task 0 every step"
            compiled.append(
                _compiled(cfg, "torch" + layout, "torch", "reference", adam(params, cfg), loss, params, note)
            )

    def ours(channels_last: bool) -> HyperModel:
        target = Target(LeNet(), channels_last=channels_last).to(cfg.device)
        hnet = HyperNetwork(target, TaskEmbedding(NUM_TASKS, TASK_EMB), MLP(()), Chunked(CHUNK, CHUNK_EMB, HIDDEN))
        return HyperModel(hnet, target).to(cfg.device)

    for layout in ("", "-channels-last"):
        model = ours(bool(layout))
        task = cycle(NUM_TASKS)
        step = train_step(_ours_adam(model, cfg), lambda model=model, task=task: F.cross_entropy(model(x, task()), y))
        note = "Chunked; NCHW input" + (", Target(channels_last=True)" if layout else "")
        variants.append(
            Variant("hyperdnn" + layout, "hyperdnn", "ours", step, model.parameter_counts()["trainable"], note)
        )
        if cfg.compiled and layout:
            model_c = ours(True)
            loss = lambda t, model_c=model_c: F.cross_entropy(model_c(x, t), y)  # noqa: E731
            n = model_c.parameter_counts()["trainable"]
            note += "; task 0 every step"
            compiled.append(
                _compiled(cfg, "hyperdnn" + layout, "hyperdnn", "ours", _ours_adam(model_c, cfg), loss, n, note)
            )
    variants += compiled
    variants.append(peers.hypnettorch_lenet(cfg, x, y, num_tasks=NUM_TASKS, emb=TASK_EMB, hidden=HIDDEN, chunk=CHUNK))
    variants.append(peers.unsupported("hyperlight", "hyperlight", peers.NO_CHUNKING))
    return Built(variants, info={"generated": numel})


# ----------------------------------------------------------------------------- W5


def w5_width(n: int) -> int:
    """Hidden width H of an MLP 784-H-H-10 with about ``n`` parameters."""
    # H^2 + 796 H + 10 = n
    return max(1, round((-796 + math.sqrt(796**2 + 4 * (n - 10))) / 2))


def w5_sizes(cfg: Config) -> tuple[int, ...]:
    if cfg.quick:
        return W5_QUICK
    return W5_SIZES["cuda" if cfg.device.type == "cuda" else "cpu"]


def build_w5(cfg: Config, n: int) -> Built:
    h = w5_width(n)
    sizes = (784, h, h, 10)
    numel = mlp_numel(sizes)
    shapes = mlp_shapes(sizes)
    x, y = classification_data(cfg, 128, 784)
    _seeded(cfg)
    variants = [_static_mlp(cfg, x, y, sizes)]
    scale = hyperfan_scale(shapes, cfg.device)
    chunks = -(-numel // CHUNK)

    def reference(scaled: bool):
        table = nn.Parameter(torch.randn(NUM_TASKS, TASK_EMB, device=cfg.device))
        gen = PlainChunked(TASK_EMB, numel, CHUNK, CHUNK_EMB, HIDDEN).to(cfg.device)

        def loss(t: int) -> torch.Tensor:
            flat = gen(table[t].unsqueeze(0))[0]
            return F.cross_entropy(mlp_forward(x, split(flat * scale if scaled else flat, shapes)), y)

        return table, gen, loss

    def ours() -> HyperModel:
        target = Target(mlp(sizes)).to(cfg.device)
        hnet = HyperNetwork(target, TaskEmbedding(NUM_TASKS, TASK_EMB), MLP(()), Chunked(CHUNK, CHUNK_EMB, HIDDEN))
        return HyperModel(hnet, target).to(cfg.device)

    compiled: list[Variant] = []
    kept = None  # the plain reference's generator and table, for the weight-generation timing
    for suffix, scaled in (("", False), ("-hyperfan", True)):
        table, gen, loss = reference(scaled)
        kept = kept or (gen, table)
        params = [table, *gen.parameters()]
        task = cycle(NUM_TASKS)
        note = f"{chunks} chunks" + (", times the hyperfan scale" if scaled else "")
        step = train_step(adam(params, cfg), lambda loss=loss, task=task: loss(task()))
        variants.append(Variant("torch" + suffix, "torch", "reference", step, count(params), note))
        if cfg.compiled:
            table, gen, loss = reference(scaled)
            params = [table, *gen.parameters()]
            note += "; task 0 every step"
            compiled.append(
                _compiled(cfg, "torch" + suffix, "torch", "reference", adam(params, cfg), loss, params, note)
            )
    model = ours()
    hnet = model.hypernet
    task2 = cycle(NUM_TASKS)
    step = train_step(_ours_adam(model, cfg), lambda: F.cross_entropy(model(x, task2()), y))
    variants.append(
        Variant("hyperdnn", "hyperdnn", "ours", step, model.parameter_counts()["trainable"], f"{chunks} chunks")
    )
    if cfg.compiled:
        model_c = ours()
        loss = lambda t: F.cross_entropy(model_c(x, t), y)  # noqa: E731
        n_c = model_c.parameter_counts()["trainable"]
        note = f"{chunks} chunks; task 0 every step"
        compiled.append(_compiled(cfg, "hyperdnn", "hyperdnn", "ours", _ours_adam(model_c, cfg), loss, n_c, note))
    variants += compiled
    gen, table = kept
    matmul = cfg.device.type == "cuda" and n == max(w5_sizes(cfg))
    extra = lambda: generation(cfg, hnet, gen, table, chunks, matmul)  # noqa: E731
    return Built(variants, info={"size": n, "generated": numel, "width": h, "chunks": chunks}, extra=extra)


def _timed(fn: Callable[[], Any], sync: Callable[[], None], reps: int) -> float:
    fn()
    sync()
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def generation(cfg: Config, hnet: HyperNetwork, gen: PlainChunked, table, chunks: int, matmul: bool) -> dict[str, Any]:
    """Weight generation alone (forward, no grad; best of 3 blocks), and with ``matmul`` the
    fraction of the device's measured matmul throughput it reaches: in fp32 (TF32 off) and
    with TF32 matmuls allowed (each against a square matmul of the same precision)."""
    sync = sync_fn(cfg.device)
    reps = 10 if cfg.device.type == "cuda" else 3
    h1, h2 = HIDDEN
    flops = 2 * (TASK_EMB * h1 + chunks * (CHUNK_EMB * h1 + h1 * h2 + h2 * CHUNK))
    with torch.no_grad():
        t_ours = _timed(lambda: hnet(0), sync, reps)
        t_ref = _timed(lambda: gen(table[:1]), sync, reps)
    out: dict[str, Any] = {
        "generation_flops": flops,
        "hyperdnn_generation_ms": t_ours * 1e3,
        "torch_generation_ms": t_ref * 1e3,
        "hyperdnn_generation_tflops": flops / t_ours / 1e12,
    }
    if matmul:
        m = 8192
        mats = [torch.randn(m, m, device=cfg.device) for _ in range(2)]
        before = torch.backends.cuda.matmul.allow_tf32
        try:
            for label, tf32 in (("fp32", False), ("tf32", True)):
                torch.backends.cuda.matmul.allow_tf32 = tf32
                t_mm = _timed(lambda: mats[0] @ mats[1], sync, 5)
                with torch.no_grad():
                    t_gen = _timed(lambda: hnet(0), sync, reps)
                    t_gen_ref = _timed(lambda: gen(table[:1]), sync, reps)
                mm_tflops = 2 * m**3 / t_mm / 1e12
                out.update(
                    {
                        f"matmul_{label}_tflops": mm_tflops,
                        f"hyperdnn_generation_{label}_ms": t_gen * 1e3,
                        f"hyperdnn_fraction_of_matmul_{label}": flops / t_gen / 1e12 / mm_tflops,
                        f"torch_fraction_of_matmul_{label}": flops / t_gen_ref / 1e12 / mm_tflops,
                    }
                )
        finally:
            torch.backends.cuda.matmul.allow_tf32 = before
            mats.clear()
        out["matmul_size"] = m
    return out


# ----------------------------------------------------------------------------- W6


def build_w6(cfg: Config) -> Built:
    x, y = classification_data(cfg, 128, 784)
    k, n = ENSEMBLE_K, x.shape[0]
    numel = mlp_numel(W0_SIZES)
    shapes = mlp_shapes(W0_SIZES)
    yk = y.repeat(k)
    dev = cfg.device
    _seeded(cfg)
    variants = [_static_mlp(cfg, x, y, W0_SIZES)]

    # hand-written: the shared input meets all K first-layer weights in one GEMM, then bmm
    scale = hyperfan_scale(shapes, dev)

    def noise() -> tuple[torch.Tensor]:
        return (torch.randn(k, NOISE, device=dev),)

    def gemm(scaled: bool) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
        gen = PlainChunked(NOISE, numel, CHUNK, CHUNK_EMB, HIDDEN).to(dev)

        def loss(z: torch.Tensor) -> torch.Tensor:
            flat = gen(z)
            w1, b1, w2, b2, w3, b3 = split(flat * scale if scaled else flat, shapes)
            h = F.linear(x, w1.reshape(-1, w1.shape[-1])).view(n, k, -1).transpose(0, 1)  # (K, N, 100)
            h = torch.relu(h + b1.unsqueeze(1))
            h = torch.relu(torch.baddbmm(b2.unsqueeze(1), h, w2.transpose(1, 2)))
            out = torch.baddbmm(b3.unsqueeze(1), h, w3.transpose(1, 2))
            return F.cross_entropy(out.reshape(k * n, -1), yk)

        return gen, loss

    compiled: list[Variant] = []
    for suffix, scaled in (("", False), ("-hyperfan", True)):
        gen, loss = gemm(scaled)
        step = train_step(adam(gen.parameters(), cfg), lambda loss=loss: loss(*noise()))
        note = "first layer one GEMM, then baddbmm" + (", times the hyperfan scale" if scaled else "")
        variants.append(Variant("torch-gemm" + suffix, "torch", "reference", step, count(gen.parameters()), note))
        if cfg.compiled:
            gen, loss = gemm(scaled)
            params = list(gen.parameters())
            opt = adam(params, cfg)
            compiled.append(_compiled(cfg, "torch-gemm" + suffix, "torch", "reference", opt, loss, params, note, noise))

    gen2 = PlainChunked(NOISE, numel, CHUNK, CHUNK_EMB, HIDDEN).to(dev)

    def bmm_loss():
        ws = split(gen2(torch.randn(k, NOISE, device=dev)), shapes)
        h = x.expand(k, n, x.shape[1])
        for i in range(3):
            h = torch.baddbmm(ws[2 * i + 1].unsqueeze(1), h, ws[2 * i].transpose(1, 2))
            if i < 2:
                h = torch.relu(h)
        return F.cross_entropy(h.reshape(k * n, -1), yk)

    step = train_step(adam(gen2.parameters(), cfg), bmm_loss)
    variants.append(
        Variant("torch-baddbmm", "torch", "reference", step, count(gen2.parameters()), "expanded input, baddbmm")
    )

    def ours() -> tuple[HyperModel, Callable[[torch.Tensor], torch.Tensor]]:
        target = Target(mlp(W0_SIZES)).to(dev)
        hnet = HyperNetwork(target, Noise(NOISE), MLP(()), Chunked(CHUNK, CHUNK_EMB, HIDDEN))
        model = HyperModel(hnet, target).to(dev)

        def loss(z: torch.Tensor) -> torch.Tensor:
            out = model(x, z)  # (K, N, 10): Target.ensemble
            return F.cross_entropy(out.reshape(k * n, -1), yk)

        return model, loss

    model, loss = ours()
    step = train_step(_ours_adam(model, cfg), lambda: loss(*noise()))
    note = "Noise -> Chunked; Target.ensemble"
    variants.append(Variant("hyperdnn", "hyperdnn", "ours", step, model.parameter_counts()["trainable"], note))
    if cfg.compiled:
        model_c, loss = ours()
        n_c = model_c.parameter_counts()["trainable"]
        compiled.append(
            _compiled(cfg, "hyperdnn", "hyperdnn", "ours", _ours_adam(model_c, cfg), loss, n_c, note, noise)
        )
    variants += compiled
    variants += peers.hypnettorch_ensemble(cfg, x, y, W0_SIZES, k=k, noise=NOISE, hidden=HIDDEN, chunk=CHUNK)
    variants.append(peers.unsupported("hyperlight", "hyperlight", peers.NO_CHUNKING))
    return Built(variants, info={"k": k, "generated_per_member": numel})


# ----------------------------------------------------------------------------- registry


def _w5_parts(cfg: Config) -> list[tuple[str, Callable[[], Built]]]:
    return [(f"W5-{size_label(n)}", lambda n=n: build_w5(cfg, n)) for n in w5_sizes(cfg)]


WORKLOADS: dict[str, Workload] = {
    "W0": Workload("W0", "static MLP 784-100-100-10, batch 128", _one("W0", build_w0)),
    "W1": Workload("W1", "task-conditioned generate-once hypernet, 89,610 generated weights", _one("W1", build_w1)),
    "W2": Workload("W2", "task-conditioned chunked hypernet (chunk 4,000, 23 chunks)", _one("W2", build_w2)),
    "W3": Workload(
        "W3", "data-conditioned per-sample weights, batch 256, 2,410 weights per sample", _one("W3", build_w3)
    ),
    "W4": Workload(
        "W4", "LeNet target (431,080 weights), chunked hypernet (108 chunks), batch 64", _one("W4", build_w4)
    ),
    "W5": Workload("W5", "scaling: chunked hypernet, target size 1e5 .. 1e7 (GPU 1e8)", _w5_parts),
    "W6": Workload("W6", "noise-conditioned ensemble, K=16 weight sets on one batch of 128", _one("W6", build_w6)),
}


def list_workloads() -> list[str]:
    """Workload names in order."""
    return list(WORKLOADS)
