"""The federated recipe: non-IID client splits, pFedHN's chain-rule update, a quick simulated run
with every method, resume, bad input, and the loopback deployment (a SuperLink and three
SuperNodes as processes on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hyperdnn.data import Split
from hyperdnn.data.federated import client_splits
from hyperdnn.methods.pfedhn import PFedHN, local_sgd
from hyperdnn.networks import mlp
from tests.helpers import assert_refused, interrupt_then_resume, run_cli, run_doctests

needs_flwr = pytest.mark.skipif(
    __import__("importlib").util.find_spec("flwr") is None, reason="needs flwr: pip install 'hyperdnn[federated]'"
)
QUICK = ["federated", "--quick", "--progress", "false"]
BIN = Path(sys.executable).parent


def toy_split(n: int = 600, classes: int = 10) -> Split:
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, 6, generator=g), torch.arange(n) % classes
    return Split(x[: n * 3 // 4], y[: n * 3 // 4], x[n * 3 // 4 :], y[n * 3 // 4 :], (1, 2, 3), classes)


def test_doctests():
    run_doctests("hyperdnn.data.federated")
    run_doctests("hyperdnn.methods.pfedhn")


def test_client_splits_deal_classes_without_sharing_images():
    data = toy_split()
    clients = client_splits(data, 10, 2, seed=1, skew=1.0)
    assert all(len(set(c.classes)) == 2 and set(c.y_train.tolist()) == set(c.classes) for c in clients)
    assert all(set(c.y_test.tolist()) == set(c.classes) for c in clients)
    rows = torch.cat([c.x_train for c in clients])
    assert len(rows) == len(data.x_train) and len(torch.unique(rows, dim=0)) == len(rows)  # every image once
    sizes = [len(c.y_train) for c in clients]
    assert max(sizes) > 1.5 * min(sizes)  # skewed
    counts = torch.bincount(torch.tensor([k for c in clients for k in c.classes]), minlength=10)
    assert counts.tolist() == [2] * 10  # every class held by as many clients
    assert [c.classes for c in client_splits(data, 10, 2, seed=1)] == [c.classes for c in clients]


def test_client_splits_deal_a_share_with_skewed_sizes():
    data = toy_split(2000)  # 150 training images a class
    full, part = client_splits(data, 10, 2, seed=1, skew=1.0), client_splits(data, 10, 2, seed=1, skew=1.0, share=0.4)
    assert [c.classes for c in part] == [c.classes for c in full]
    assert all(torch.equal(a.x_train, b.x_train) for a, b in zip(full, client_splits(data, 10, 2, 1, 1.0, 1.0)))
    assert sum(len(c.y_train) for c in part) == 10 * 60  # 40% of each class's 150
    sizes = [len(c.y_train) for c in part]
    assert max(sizes) > 1.5 * min(sizes) and min(sizes) >= 2 * 5  # skewed, at least 5 a class
    assert all(torch.equal(a.x_test, b.x_test) for a, b in zip(full, part))  # the same test images
    tiny = client_splits(data, 10, 2, seed=1, share=0.01)  # below the floor: 5 a client and class
    assert [len(c.y_train) for c in tiny] == [10] * 10
    with pytest.raises(ValueError, match="share"):
        client_splits(data, 10, 2, seed=1, share=0.0)


def test_client_splits_refuse_what_cannot_be_split():
    with pytest.raises(ValueError, match="at most 45 clients"):  # 45 images a class, 5 at least each
        client_splits(toy_split(), 46, 2, seed=0)
    assert len(client_splits(toy_split(), 45, 2, seed=0)) == 45  # the most it said
    with pytest.raises(ValueError, match="classes_per_client"):
        client_splits(toy_split(), 4, 11, seed=0)


def test_pfedhn_step_is_the_chain_rule_of_the_clients_change():
    torch.manual_seed(0)
    server = PFedHN(mlp(6, (5,), 3), num_clients=3, embed_dim=4, hidden=(8,), lr=1e-3)
    sent = server.generate(1)
    x, y = torch.rand(20, 6), torch.randint(0, 3, (20,))
    trained = local_sgd(server.client_module(sent), x, y, 3, 0.1, 8, torch.Generator().manual_seed(0))
    delta = {k: trained[k] - sent[k] for k in sent}
    theta = server.hnet(1)  # the gradient of <theta, -delta> wrt the hypernetwork and the embedding
    params = [p for p in server.hnet.parameters() if p is not server.hnet.conditioner.embeddings[0]]
    params = [p for p in params if p is not server.hnet.conditioner.embeddings[2]]
    expected = torch.autograd.grad(-sum((theta[k] * delta[k]).sum() for k in theta), params)
    before = {k: v.clone() for k, v in server.hnet.state_dict().items()}
    server.step(1, delta)
    for p, g in zip(params, expected):
        torch.testing.assert_close(p.grad, g)
    assert server.hnet.conditioner.embeddings[0].grad is None  # other clients untouched
    assert not torch.equal(server.hnet.state_dict()["conditioner.embeddings.1"], before["conditioner.embeddings.1"])
    with pytest.raises(KeyError, match="expected deltas"):
        server.step(1, {"0.weight": delta["0.weight"]})


def test_pfedhn_new_clients_learn_only_their_embedding():
    torch.manual_seed(0)
    server = PFedHN(mlp(6, (5,), 3), num_clients=2, embed_dim=4, hidden=(8,), lr=1e-3)
    before = {k: v.clone() for k, v in server.hnet.state_dict().items()}
    (new,) = server.freeze(1, lr=0.1)
    assert new == 2
    sent = server.generate(new)
    server.step(new, {k: torch.randn_like(v) for k, v in sent.items()})
    after = server.hnet.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert not torch.allclose(server.generate(new)["0.weight"], sent["0.weight"])
    # a client from before the freeze no longer trains: named (it was autograd's own error)
    with pytest.raises(
        ValueError, match=r"frozen \(freeze\) and only the clients added since train \(\[2\]\); got client 0"
    ):
        server.step(0, {k: torch.randn_like(v) for k, v in sent.items()})


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("federated") / "run"
    code, err = run_cli([*QUICK, "--out", str(out)])
    assert code == 0, err
    return out, json.loads((out / "results.json").read_text())["metrics"]


@needs_flwr
def test_quick_run_trains_every_method(quick_run):
    out, metrics = quick_run
    assert set(metrics["accuracy"]) == {"pfedhn", "pfedhn_pc", "fedavg", "fedavg_ft", "local"}
    for acc in metrics["accuracy"].values():
        assert sorted(acc, key=int) == [str(c) for c in range(8)] and all(0 <= a <= 1 for a in acc.values())
    assert metrics["bytes_per_round"]["pfedhn"] == metrics["bytes_per_round"]["fedavg"] > 0  # whole MLPs both ways
    assert metrics["bytes_per_round"]["pfedhn_pc"] < metrics["bytes_per_round"]["pfedhn"]  # the head stays home
    assert all(metrics["deployment"]["pfedhn"]["matched"].values())
    assert (out / "clients.png").stat().st_size > 0 and "pFedHN" in (out / "summary.md").read_text()


@needs_flwr
def test_resume_gives_the_same_results(quick_run, monkeypatch, tmp_path):
    """Stopped after local training, resumed: pFedHN's Flower run then gives the numbers of the
    uninterrupted run of every method (one simulation here: each starts Ray and its actors)."""
    _, full = quick_run
    argv = [*QUICK[1:], "--methods", "local,pfedhn"]
    resumed = interrupt_then_resume(monkeypatch, "federated", argv, tmp_path / "run", stop_at=1)
    assert resumed["accuracy"] == {m: full["accuracy"][m] for m in ("local", "pfedhn")}


@needs_flwr
def test_bad_input_is_refused(tmp_path):
    assert_refused(tmp_path, ["federated", "--clients", "2000"], "cannot be split")
    assert_refused(tmp_path, ["federated", "--share", "1.5"], "--share")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    assert_refused(tmp_path, ["federated", "--superlink", f"127.0.0.1:{port}"], "no answer")
    assert time.monotonic() - start < 30


# ====================================================================== the loopback deployment
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process."""
    out = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            out[int(p)] = (int(stat[1]), cmd)
    return out


def family(roots: list[int]) -> list[int]:
    """``roots``, their descendants, and the processes Flower starts detached for them
    (``--parent-pid <root>``), with theirs."""
    procs = _processes()
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo += [p for p, (pp, cmd) in procs.items() if pp == pid or f"--parent-pid {pid}" in cmd]
    return sorted(found & set(procs))


def listening(pids: list[int]) -> set[str]:
    """The addresses the processes ``pids`` listen on (TCP), ``host:port``."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    found = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # LISTEN
                host, port = f[1].split(":")
                raw = bytes.fromhex(host)
                ip = socket.inet_ntop(socket.AF_INET if width == 4 else socket.AF_INET6, raw[::-1] if width == 4 else b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))  # fmt: skip
                found.add(f"{ip}:{int(port, 16)}")
    return found


def stop(pids: list[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() and "(Z)" not in _state(p) for p in pids):  # fmt: skip
            time.sleep(0.2)


def _state(pid: int) -> str:
    try:
        return " (Z)" if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z" else ""
    except OSError:
        return " (Z)"


@needs_flwr
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="the deployment test reads /proc (Linux)")
def test_loopback_deployment(tmp_path):
    """flower-superlink and 3 flower-supernode processes on 127.0.0.1; pFedHN for 1 round: every
    client received its personal weights, the hypernetwork changed; a 4th SuperNode with an
    unknown client id is refused."""
    from hyperdnn.recipes._federated_flower import FLOWER_ENV

    env = {**os.environ, **FLOWER_ENV, "FLWR_HOME": str(tmp_path / "flwr"), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    link = f"127.0.0.1:{free_port()}"
    started: list[subprocess.Popen] = []

    def start(*cmd: str, log: str) -> None:
        with open(tmp_path / log, "w") as f:
            started.append(subprocess.Popen([str(BIN / cmd[0]), *cmd[1:]], env=env, cwd=tmp_path, stdout=f, stderr=subprocess.STDOUT))  # fmt: skip

    def supernode(i: int) -> None:
        start("flower-supernode", "--insecure", "--superlink", link, "--host", "127.0.0.1", "--port", str(free_port()),
              "--node-config", f"partition-id={i} num-partitions=3", log=f"supernode{i}.log")  # fmt: skip

    run = [sys.executable, "-m", "hyperdnn.cli", "run", "federated", "--quick", "--methods", "pfedhn", "--superlink", link, "--clients", "3",
           "--new-clients", "0", "--rounds", "1", "--per-round", "3", "--timeout", "120", "--progress", "false"]  # fmt: skip
    try:
        host, port = link.split(":")
        start("flower-superlink", "--insecure", "--host", host, "--port", port,
              "--disable-runtime-dependency-installation", log="superlink.log")  # fmt: skip
        for i in range(3):
            supernode(i)
        done = subprocess.run([*run, "--out", str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=400)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        metrics = json.loads((tmp_path / "run" / "results.json").read_text())["metrics"]
        deployed = metrics["deployment"]["pfedhn"]
        assert deployed["matched"] == {"0": True, "1": True, "2": True}  # each client got its own weights
        assert deployed["eval_matched"] == {"0": True, "1": True, "2": True}
        assert deployed["hnet_change"] > 0  # the server's hypernetwork learned from the deltas
        assert sorted(metrics["accuracy"]["pfedhn"]) == ["0", "1", "2"]
        addresses = listening(family([p.pid for p in started]))
        assert addresses and all(a.startswith("127.0.0.1:") for a in addresses), addresses
        supernode(9)  # a client the server does not know
        refused = subprocess.run([*run, "--out", str(tmp_path / "refused")], env=env, capture_output=True, text=True, timeout=400)  # fmt: skip
        assert refused.returncode == 2 and "unknown to the server" in refused.stderr, refused.stderr[-2000:]
        assert not (tmp_path / "refused").exists()
    finally:
        stop(family([p.pid for p in started]))
        for p in started:
            p.wait(10)
