"""The Flower apps of the ``federated`` recipe: one client app, the pFedHN server and FedAvg.

The same :data:`client_app` runs in Flower's simulation (clients as Ray actors) and in
``flower-supernode`` processes; :data:`server_app` is the pFedHN server that ``flwr run``
starts on a SuperLink (it reads the run's settings from the run config's ``spec`` and writes
what it measured to ``spec["result_dir"]``), and :func:`pfedhn_server` is the same server
for a simulation started in this process.

A client learns which data it holds from its node config (``partition-id``, as Flower's
simulation sets it and ``flower-supernode --node-config "partition-id=i"`` does) and the
message's ``spec`` (data set, seed, clients, classes): every client deals the same split
(:func:`~hyperdnn.data.federated.client_splits`) and keeps its own part.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",  # no reports to Flower's servers
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",  # never let flwr run install packages
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # Ray stays on this machine's loopback
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",  # no accelerator settings touched (and no warning)
    "RAY_worker_niceness": "0",  # Ray's actors as nice as this process (Ray adds 15 otherwise)
}
for _k, _v in FLOWER_ENV.items():
    os.environ.setdefault(_k, _v)

import torch  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402

from hyperdnn.data import load_dataset  # noqa: E402
from hyperdnn.data.federated import ClientData, client_splits  # noqa: E402
from hyperdnn.methods.pfedhn import PFedHN, accuracy, local_sgd  # noqa: E402
from hyperdnn.networks import mlp  # noqa: E402

__all__ = ["client_app", "server_app", "pfedhn_server", "fedavg_server", "encode_spec", "decode_spec",
           "build_target", "head_names", "UnknownClient", "payload_bytes"]  # fmt: skip


class UnknownClient(ValueError):
    """A SuperNode names a client the server does not have."""


def encode_spec(spec: Mapping[str, Any]) -> str:
    """``spec`` as one run-config string (base64 of its JSON: no quoting problems)."""
    return base64.b64encode(json.dumps(dict(spec), sort_keys=True).encode()).decode()


def decode_spec(text: str) -> dict[str, Any]:
    """The inverse of :func:`encode_spec`."""
    return json.loads(base64.b64decode(text.encode()).decode())


@functools.lru_cache(maxsize=4)
def _clients(data: str, seed: int, total: int, classes: int, skew: float, share: float) -> tuple[ClientData, ...]:
    return tuple(client_splits(load_dataset(data, seed), total, classes, seed, skew, share))


def client_data(spec: Mapping[str, Any], client: int) -> ClientData:
    """Client ``client``'s part of the split ``spec`` describes (trained and new clients)."""
    total = spec["clients"] + spec["new_clients"]
    return _clients(spec["data"], spec["seed"], total, spec["classes"], spec["skew"], spec.get("share", 1.0))[client]


def build_target(spec: Mapping[str, Any], init_seed: int) -> torch.nn.Module:
    """The clients' classifier, initialised from ``init_seed``."""
    torch.manual_seed(init_seed)
    return mlp(spec["features"], tuple(spec["hidden"]), spec["num_classes"])


def head_names(spec: Mapping[str, Any]) -> list[str]:
    """The classifier head's tensors (the last linear layer): pFedHN-PC keeps them on the client."""
    last = 2 * len(spec["hidden"])
    return [f"{last}.weight", f"{last}.bias"]


def payload_bytes(tensors: Mapping[str, torch.Tensor]) -> int:
    """The bytes of a record's tensors (what travels, without the message's framing)."""
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _generator(spec: Mapping[str, Any], *parts: int) -> torch.Generator:
    seed = spec["seed"]
    for p in parts:
        seed = (seed * 1_000_003 + p + 1) % (2**62)
    return torch.Generator().manual_seed(seed)


# ====================================================================== the client
client_app = ClientApp()


def _partition(context: Context) -> int:
    return int(context.node_config["partition-id"])


def _local_model(spec: Mapping[str, Any], client: int, received: Mapping[str, torch.Tensor], context: Context) -> torch.nn.Module:  # fmt: skip
    """The client's model: the received weights, and (pFedHN-PC) its own head, kept in its state."""
    model = build_target(spec, spec["seed"] * 1000 + client)  # a personal head's first values
    own = context.state.get("head") if spec.get("personal_head") else None
    if isinstance(own, ArrayRecord):
        model.load_state_dict(own.to_torch_state_dict(), strict=False)
    model.load_state_dict(dict(received), strict=False)
    return model


@client_app.query()
def whoami(msg: Message, context: Context) -> Message:
    """Tell the server which client this node holds."""
    return Message(RecordDict({"metrics": MetricRecord({"partition-id": _partition(context)})}), reply_to=msg)


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """Local training from the received weights; replies with the change (pFedHN) or the
    trained weights (FedAvg), and a checksum of what arrived."""
    torch.set_num_threads(1)
    cfg = msg.content["config"]
    spec = decode_spec(str(cfg["spec"]))
    client, rnd = _partition(context), int(cfg["server-round"])
    data = client_data(spec, client)
    received = msg.content["arrays"].to_torch_state_dict()
    model = _local_model(spec, client, received, context)
    trained = local_sgd(model, data.x_train, data.y_train, spec["steps"], spec["lr"], spec["batch_size"],
                        _generator(spec, rnd, client))  # fmt: skip
    if spec.get("personal_head"):
        context.state["head"] = ArrayRecord({k: trained[k] for k in head_names(spec)})
    if cfg.get("method") == "pfedhn":
        out = {k: trained[k] - received[k] for k in received}
    else:
        out = trained
    checksum = float(sum(v.double().sum() for v in received.values()))
    metrics = MetricRecord({"num-examples": len(data.y_train), "partition-id": client, "received": checksum})
    return Message(RecordDict({"arrays": ArrayRecord(out), "metrics": metrics}), reply_to=msg)


@client_app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Test accuracy of the received weights (with the client's own head under pFedHN-PC)."""
    torch.set_num_threads(1)
    spec = decode_spec(str(msg.content["config"]["spec"]))
    client = _partition(context)
    data = client_data(spec, client)
    received = msg.content["arrays"].to_torch_state_dict()
    acc = accuracy(_local_model(spec, client, received, context), data.x_test, data.y_test)
    checksum = float(sum(v.double().sum() for v in received.values()))
    metrics = {"accuracy": acc, "partition-id": client, "received": checksum, "num-examples": len(data.y_test)}
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


# ====================================================================== the pFedHN server
def _nodes(grid: Grid, spec: Mapping[str, Any], total: int) -> dict[int, int]:
    """client id -> node id: waits for ``total`` nodes, then asks each which client it holds."""
    deadline = time.monotonic() + spec["timeout"]
    while len(list(grid.get_node_ids())) < total:
        if time.monotonic() > deadline:
            have = len(list(grid.get_node_ids()))
            raise TimeoutError(f"{have} of {total} clients connected within {spec['timeout']:g} s")
        time.sleep(0.2)
    ids = sorted(grid.get_node_ids())
    msgs = [Message(RecordDict(), dst_node_id=n, message_type="query", group_id="whoami") for n in ids]
    found: dict[int, int] = {}
    for reply in grid.send_and_receive(msgs, timeout=spec["timeout"]):
        if reply.has_error():
            raise RuntimeError(f"a client failed to answer: {reply.error.reason}")
        found[int(reply.content["metrics"]["partition-id"])] = reply.metadata.src_node_id
    unknown = sorted(set(found) - set(range(total)))
    if unknown:
        raise UnknownClient(f"client ids {unknown} are unknown to the server (it has clients 0 to {total - 1})")
    if len(found) < total:
        raise TimeoutError(f"clients {sorted(set(range(total)) - set(found))} did not answer")
    return found


def _exchange(grid: Grid, spec: Mapping[str, Any], nodes: Mapping[int, int], kind: str, rnd: int,
              sent: Mapping[int, Mapping[str, torch.Tensor]]) -> dict[int, RecordDict]:  # fmt: skip
    """Send each client its weights; the replies by client id."""
    config = ConfigRecord({"spec": encode_spec(spec), "server-round": rnd, "method": "pfedhn"})
    msgs = [Message(RecordDict({"arrays": ArrayRecord(dict(w)), "config": config}), dst_node_id=nodes[c],
                    message_type=kind, group_id=str(rnd)) for c, w in sent.items()]  # fmt: skip
    replies: dict[int, RecordDict] = {}
    for reply in grid.send_and_receive(msgs, timeout=spec["timeout"]):
        if reply.has_error():
            raise RuntimeError(f"a client failed in round {rnd}: {reply.error.reason}")
        replies[int(reply.content["metrics"]["partition-id"])] = reply.content
    if len(replies) < len(sent):
        raise TimeoutError(f"round {rnd}: clients {sorted(set(sent) - set(replies))} did not reply within {spec['timeout']:g} s")  # fmt: skip
    return replies


def pfedhn_server(grid: Grid, spec: Mapping[str, Any], tick: Callable[[], None] = lambda: None) -> tuple[PFedHN, dict[str, Any]]:  # fmt: skip
    """Run pFedHN: ``spec["rounds"]`` rounds of ``spec["per_round"]`` clients, then the new
    clients' embeddings (``spec["new_rounds"]`` rounds, the hypernetwork frozen), then one
    evaluation of every client's personal weights.

    Returns:
        The trained server state and the record: ``accuracy`` per client id, ``bytes``
        (sent and received per round), ``received`` (whether each client's checksum matched).
    """
    torch.manual_seed(spec["seed"])
    net = build_target(spec, spec["seed"])
    generated = [n for n, _ in net.named_parameters() if not (spec.get("personal_head") and n in head_names(spec))]
    server = PFedHN(net, spec["clients"], spec["embed_dim"], spec["hnet_hidden"], spec["hnet_lr"], generated)
    total = spec["clients"] + spec["new_clients"]
    nodes = _nodes(grid, spec, total)
    record: dict[str, Any] = {"bytes_sent": [], "bytes_received": [], "matched": {}}

    def round_(rnd: int, chosen: list[int]) -> None:
        sent = {c: server.generate(c) for c in chosen}
        replies = _exchange(grid, spec, nodes, "train", rnd, sent)
        for c in sorted(replies):  # in client order: the same updates however the replies arrive
            delta = replies[c]["arrays"].to_torch_state_dict()
            server.step(c, delta)
            ok = abs(float(replies[c]["metrics"]["received"]) - float(sum(v.double().sum() for v in sent[c].values())))  # fmt: skip
            record["matched"][str(c)] = ok < 1e-3
        record["bytes_sent"].append(sum(payload_bytes(w) for w in sent.values()))
        record["bytes_received"].append(sum(payload_bytes(r["arrays"].to_torch_state_dict()) for r in replies.values()))  # fmt: skip
        tick()

    for rnd in range(spec["rounds"]):
        order = torch.randperm(spec["clients"], generator=_generator(spec, 7, rnd))
        round_(rnd + 1, sorted(order[: spec["per_round"]].tolist()))
    with torch.no_grad():
        record["hnet_norm"] = float(torch.sqrt(sum((p.double() ** 2).sum() for p in server.hnet.parameters())))
    new = server.freeze(spec["new_clients"], spec["embed_lr"], _generator(spec, 11)) if spec["new_clients"] else []
    for rnd in range(spec["new_rounds"] if new else 0):
        round_(spec["rounds"] + rnd + 1, new)
    finals = {c: server.generate(c) for c in range(total)}
    replies = _exchange(grid, spec, nodes, "evaluate", spec["rounds"] + spec["new_rounds"] + 1, finals)
    record["accuracy"] = {str(c): float(replies[c]["metrics"]["accuracy"]) for c in sorted(replies)}
    record["eval_matched"] = {str(c): abs(float(replies[c]["metrics"]["received"]) - float(sum(v.double().sum() for v in finals[c].values()))) < 1e-3 for c in sorted(replies)}  # fmt: skip
    return server, record


server_app = ServerApp()


@server_app.main()
def deployed(grid: Grid, context: Context) -> None:
    """pFedHN on a SuperLink (``flwr run``): writes ``result.json`` (or ``error.json``) and the
    hypernetwork's initial and final state to ``spec["result_dir"]``."""
    spec = decode_spec(str(context.run_config["spec"]))
    out = Path(spec["result_dir"])
    torch.set_num_threads(1)
    try:
        torch.manual_seed(spec["seed"])
        initial = {k: v.clone() for k, v in PFedHN(build_target(spec, spec["seed"]), spec["clients"], spec["embed_dim"], spec["hnet_hidden"], spec["hnet_lr"]).hnet.state_dict().items()}  # fmt: skip
        server, record = pfedhn_server(grid, spec)
    except (UnknownClient, TimeoutError, RuntimeError) as e:
        (out / "error.json").write_text(json.dumps({"kind": type(e).__name__, "message": str(e)}))
        return
    final = server.hnet.state_dict()
    record["hnet_change"] = float(sum(((final[k].double() - initial[k].double()) ** 2).sum() for k in initial if k in final and final[k].shape == initial[k].shape) ** 0.5)  # fmt: skip
    (out / "result.json").write_text(json.dumps(record))


# ====================================================================== FedAvg (Flower's strategy)
def fedavg_server(grid: Grid, spec: Mapping[str, Any], tick: Callable[[], None] = lambda: None) -> dict[str, torch.Tensor]:  # fmt: skip
    """Flower's FedAvg over the ``spec["clients"]`` trained clients, ``spec["per_round"]`` a
    round; returns the global model's weights."""
    import random

    nodes = _nodes(grid, spec, spec["clients"])
    random.seed(spec["seed"])  # Flower samples the round's clients with Python's random ...
    grid = _ClientOrder(grid, [nodes[c] for c in sorted(nodes)])  # ... from the nodes in client order
    net = build_target(spec, spec["seed"])
    per = spec["per_round"]
    strategy = FedAvg(fraction_train=per / spec["clients"], fraction_evaluate=0.0, min_train_nodes=per,
                      min_evaluate_nodes=0, min_available_nodes=spec["clients"])  # fmt: skip
    ticking = _Ticking(strategy, tick)
    result = ticking.start(grid=grid, initial_arrays=ArrayRecord(net.state_dict()), num_rounds=spec["rounds"],
                           timeout=spec["timeout"], train_config=ConfigRecord({"spec": encode_spec(spec), "method": "fedavg"}))  # fmt: skip
    return result.arrays.to_torch_state_dict()


class _ClientOrder:
    """A grid whose nodes are listed in client order (Flower's node ids are random), so that a
    seeded FedAvg samples the same clients in every run."""

    def __init__(self, grid: Grid, ordered: list[int]):
        self._grid, self._ordered = grid, ordered

    def get_node_ids(self) -> list[int]:
        live = set(self._grid.get_node_ids())
        return [n for n in self._ordered if n in live]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


def _client_of(msg: Message) -> int:
    return -1 if msg.has_error() else int(msg.content["metrics"]["partition-id"])


class _Ticking:
    """FedAvg that averages the replies in client order (the same sums however they arrive) and
    ticks the progress bar after each round."""

    def __init__(self, strategy: FedAvg, tick: Callable[[], None]):
        self.strategy, self.tick = strategy, tick
        aggregate = strategy.aggregate_train

        def counted(server_round: int, replies: Any) -> Any:
            out = aggregate(server_round, sorted(replies, key=_client_of))
            tick()
            return out

        strategy.aggregate_train = counted  # type: ignore[method-assign]

    def start(self, **kwargs: Any) -> Any:
        return self.strategy.start(**kwargs)
