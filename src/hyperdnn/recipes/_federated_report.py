"""The ``federated`` recipe's report: accuracy per client and method, the means, bytes per round,
the issue's checks and a per-client plot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hyperdnn.engine.report import Column, Report, Table, line_chart_figure
from hyperdnn.engine.run import Outcome, RunContext

__all__ = ["report", "LABELS"]

LABELS = {
    "pfedhn": "pFedHN",
    "pfedhn_pc": "pFedHN-PC",
    "fedavg": "FedAvg",
    "fedavg_ft": "FedAvg + fine-tuning",
    "local": "local only",
}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def report(cfg: Any, ctx: RunContext, spec: Mapping[str, Any], sizes: Sequence[int], res: dict[str, Any],
           times: Mapping[str, float]) -> Outcome:  # fmt: skip
    """summary.md: accuracy per client and method, the means of the trained and the late
    clients, bytes per round, the checks; clients.png."""
    from hyperdnn.recipes._federated_flower import client_data

    acc = res["accuracy"]
    methods = [m for m in LABELS if m in acc]
    trained = [str(c) for c in range(cfg.clients)]
    late = [str(c) for c in range(cfg.clients, cfg.clients + cfg.new_clients)]
    mean = {m: _mean([acc[m][c] for c in trained]) for m in methods}
    mean_late = {m: _mean([acc[m][c] for c in late if c in acc[m]]) for m in methods}
    where = f"the SuperLink at {cfg.superlink}" if cfg.superlink else "Flower's simulation (Ray, 1 CPU per client)"
    rep = Report(ctx, f"federated: {cfg.clients} clients of {cfg.classes} classes from {cfg.data}, seed {ctx.seed}")
    rep.text(
        f"MLP {spec['features']}-{'-'.join(map(str, cfg.hidden))}-{spec['num_classes']} on every client; {cfg.rounds} "
        f"rounds of {cfg.per_round} clients on {where}; {cfg.steps} local SGD steps (lr {cfg.lr}, batch "
        f"{cfg.batch_size}) per client and round. pFedHN: embedding {cfg.embed_dim}, trunk {cfg.hnet_hidden}, Adam lr "
        f"{cfg.hnet_lr}; late clients: {cfg.new_rounds} rounds that learn only their embedding (Adam lr "
        f"{cfg.embed_lr}). FedAvg + fine-tuning: {cfg.finetune_steps} local steps from the final global model. "
        f"Local only: {res.get('local_steps', '-')} steps per client (what a client trains in the federated runs). "
        "Accuracy: each client's test images of its own classes."
    )
    table = Table([Column("group"), Column("clients", "n")] + [Column(LABELS[m], m, ".1f", scale=100) for m in methods])
    table.add(group="trained clients (mean)", n=len(trained), **mean)
    if late:
        table.add(group="late clients (mean)", n=len(late), **mean_late)
    rep.section("Mean personalised test accuracy (%)")
    rep.table(table)
    per = Table([Column("client"), Column("classes"), Column("training images", "size")]
                + [Column(LABELS[m], m, ".1f", scale=100) for m in methods])  # fmt: skip
    for c in trained + late:
        data = client_data(spec, int(c))
        per.add(client=c + (" (late)" if c in late else ""), classes=",".join(map(str, data.classes)),
                size=sizes[int(c)], **{m: acc[m].get(c) for m in methods})  # fmt: skip
    rep.section("Accuracy per client (%)")
    rep.table(per)
    cost = Table([Column("method"), Column("bytes per round", "bytes", ","), Column("time (s)", "time", ".0f"),
                  Column("CPU of Ray's processes (s)", "ray", ".0f")])  # fmt: skip
    for m in methods:
        unit = "fedavg" if m == "fedavg_ft" else m
        cost.add(method=LABELS[m], bytes=round(res["bytes_per_round"].get(m, 0)), time=times.get(unit, 0.0),
                 ray=res["ray_cpu_s"].get(unit, 0.0))  # fmt: skip
    rep.section("Communication (weights sent and received per training round) and time")
    rep.table(cost)
    checks: dict[str, float] = {}
    if "pfedhn" in mean and "fedavg" in mean:
        checks["pfedhn_vs_fedavg_points"] = 100 * (mean["pfedhn"] - mean["fedavg"])
    if "pfedhn" in mean and "local" in mean:
        checks["pfedhn_vs_local_points"] = 100 * (mean["pfedhn"] - mean["local"])
    if checks:
        rep.text(*(f"pFedHN vs {LABELS[k.split('_')[2]]}: {v:+.2f} points (target: at least "
                   f"{10 if 'fedavg' in k else 3})." for k, v in checks.items()))  # fmt: skip
    curves = {LABELS[m]: (list(range(len(trained + late))), [100 * acc[m][c] for c in trained + late]) for m in methods}
    rep.figure(line_chart_figure(curves, f"accuracy per client (clients {len(trained)} and up join late)", "client",
                                 "test accuracy (%)"), "clients.png", "personalised accuracy per client")  # fmt: skip
    return rep.outcome({"accuracy": acc, "mean": mean, "mean_late": mean_late, "bytes_per_round": res["bytes_per_round"],
                        "deployment": res["deployment"], "checks": checks, "ray_cpu_s": res["ray_cpu_s"], "local_steps": res.get("local_steps"),
                        "time_s": dict(times)})  # fmt: skip
