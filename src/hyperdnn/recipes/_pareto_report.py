"""The pareto recipe's two solvers and its report: a table per problem (hypervolume, training
time, the share of the separate models' time), the losses at the separate models' rays, and the
fronts figure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hyperdnn.engine.loop import LoopResult
from hyperdnn.engine.report import Column, Report, Table, curves_and_points_figure
from hyperdnn.engine.run import Outcome, RunContext
from hyperdnn.methods.pareto import ExactParetoOptimal, LinearScalarization, toy_front
from hyperdnn.metrics.pareto import hypervolume

if TYPE_CHECKING:
    from hyperdnn.recipes.pareto import ParetoConfig, Problem

__all__ = ["SOLVERS", "report"]

SOLVERS = {"phn-ls": LinearScalarization, "phn-epo": ExactParetoOptimal}


def report(cfg: ParetoConfig, ctx: RunContext, problems: Mapping[str, Problem], done: LoopResult) -> Outcome:
    """summary.md (a table per problem, the losses at the baseline rays, the fronts) and the metrics."""
    res = done.results
    rep = Report(ctx, f"pareto: Pareto hypernetworks vs separate models, seed {ctx.seed}")
    rep.text(
        f"Hypernetworks: MLP trunk {','.join(map(str, cfg.trunk))}, one linear output layer, the target's weights as "
        f"a learned base plus a ray-dependent residual; training rays Dirichlet({cfg.alpha}), {cfg.rays_per_step} "
        f"per step ({cfg.toy_rays_per_step} on the toy) on one shared batch of {cfg.batch_size} / {cfg.rays_per_step} "
        f"images (as many (image, ray) pairs per step as a separate model's batch). Separate models: linear scalarisation "
        f"at rays {cfg.rays}. Fronts: the hypernetworks at {cfg.front_rays} rays spread in angle. Hypervolume of the "
        "test losses (larger is better). Times are training only (no evaluation), in CPU seconds of the run's "
        "process (on a quiet machine with one thread, its wall time; on a shared machine the wall time also holds "
        "the waits for a CPU), and in wall seconds."
    )
    metrics: dict[str, Any] = {}
    panels = {}
    for name, p in problems.items():
        baselines = [f"{name}/ls-{i + 1}" for i in range(len(cfg.rays))]
        base_points = [res[k]["front"]["losses"][0] for k in baselines]
        base_time = sum(res[k]["train_seconds"] for k in baselines)
        known = hypervolume(toy_front(20001), p.reference) if p.toy else None
        columns = [
            Column("method"),
            Column(f"hypervolume (ref {p.reference})", "hv", ".4f"),
            Column("points", "points"),
            Column("training time (CPU s)", "time", ".1f"),
            Column("wall (s)", "wall", ".1f"),
            Column("CPU time vs the separate models (%)", "share", ".0f", scale=100),
        ]
        if p.toy:
            columns.append(Column(f"dense sweep ({cfg.toy_dense_rays} rays) / known front (%)", "of_known", ".2f", scale=100))  # fmt: skip
        table = Table(columns)
        toy = lambda value, on=p.toy: {"of_known": value} if on else {}  # noqa: E731
        for m in SOLVERS:
            e = res[f"{name}/{m}"]
            dense = e.get("dense_hypervolume")
            table.add(method=m.upper(), hv=e["hypervolume"], points=len(e["front"]["losses"]), time=e["train_seconds"],
                      wall=e["wall_seconds"], share=e["train_seconds"] / base_time,
                      **toy(dense / known if dense is not None and known else None))  # fmt: skip
        separate = hypervolume(base_points, p.reference)
        table.add(method=f"{len(baselines)} separate LS models", hv=separate, points=len(baselines), time=base_time,
                  wall=sum(res[k]["wall_seconds"] for k in baselines), share=1.0, **toy(None))  # fmt: skip
        if p.toy:
            table.add(method="known front (20,001 points)", hv=known, points=20001, time=None, wall=None, share=None,
                      of_known=1.0)  # fmt: skip
        rep.section(f"{name}: " + ("the toy problem (known concave front)" if p.toy else f"Multi-MNIST ({cfg.data})"))
        rep.table(table)
        at = Table([Column("ray"), Column("separate model", "base"), *(Column(m.upper(), m) for m in SOLVERS)])
        for i, k in enumerate(baselines):
            at.add(ray=str(cfg.rays[i]), base=_pair(res[k]["front"]["losses"][0]),
                   **{m: _pair(res[f"{name}/{m}"]["baseline_rays"]["losses"][i]) for m in SOLVERS})  # fmt: skip
        rep.text(f"Test losses ({', '.join(p.objectives)}) at the separate models' rays:")
        rep.table(at)
        curves = {m.upper(): _xy(res[f"{name}/{m}"]["front"]["losses"]) for m in SOLVERS}
        curves["separate LS models"] = _xy(base_points)
        if p.toy:
            curves["known front"] = _xy(toy_front(200).tolist())
        panels[name] = curves
        metrics[name] = {
            "reference": list(p.reference),
            "methods": {k.split("/")[1]: res[k] for k in res if k.startswith(f"{name}/")},
            "table": table.records(),
            "separate_hypervolume": separate,
            "separate_train_seconds": base_time,
            **({"known_front_hypervolume": known} if p.toy else {}),
        }
    labels = [f"{problems[n].objectives[1]}" for n in panels]
    figure = curves_and_points_figure(
        panels, "Test-loss fronts: hypernetworks swept over rays vs separate models", "first objective's loss", labels,
        points=["separate LS models"], dashed=["known front"],
    )  # fmt: skip
    rep.figure(figure, "fronts.png", "the fronts")
    metrics["time_s"] = {k: round(v, 2) for k, v in done.times.items()}
    return rep.outcome(metrics)


def _pair(v: list[float]) -> str:
    return f"{v[0]:.4f}, {v[1]:.4f}"


def _xy(points: list[list[float]]) -> tuple[list[float], list[float]]:
    return [q[0] for q in points], [q[1] for q in points]
