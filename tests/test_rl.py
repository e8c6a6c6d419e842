"""The rl recipe and its pieces: the physics wrapper and the batched simulators against
Gymnasium, the experts, the hypernetwork policy against a loop and against ordinary training,
PPO's advantages, reproducible evaluation, the recipe end to end with resume, bad input."""

from __future__ import annotations

import copy
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

gym = pytest.importorskip("gymnasium", reason="the rl extra: pip install 'hyperdnn[rl]'")
pytest.importorskip("torchrl", reason="the rl extra: pip install 'hyperdnn[rl]'")

from hyperdnn.baselines.context_policy import ConcatPolicy, PlainPolicy  # noqa: E402
from hyperdnn.baselines.controllers import make_expert, nearest_tasks  # noqa: E402
from hyperdnn.data.control import PhysicsWrapper, get_family, list_families  # noqa: E402
from hyperdnn.engine import Checkpointer, run_command  # noqa: E402
from hyperdnn.methods.context_policy import HyperPolicy, distinct_rows  # noqa: E402
from hyperdnn.methods.distillation import Demonstrations, collect_demonstrations, distillation_loss  # noqa: E402
from hyperdnn.methods.ppo import PPO, PPOSettings  # noqa: E402
from hyperdnn.metrics.control import normalised_return, split_means, task_returns  # noqa: E402
from hyperdnn.recipes._rl_report import check_against_gymnasium  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

PENDULUM, CARTPOLE = get_family("pendulum"), get_family("cartpole")


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    code = run_command(argv, stdout=io.StringIO(), stderr=err)
    return code, err.getvalue()


# ---------------------------------------------------------------------- the wrapper changes the physics
def test_pendulum_wrapper_changes_the_dynamics_as_physics_predicts() -> None:
    """From rest at angle theta0, one step without torque gains 3g/(2l) sin(theta0) dt of angular
    velocity; a torque u adds 3u/(m l^2) dt: doubling g, halving m, doubling l act as predicted."""
    theta0, dt = 0.7, 0.05

    def first_velocity(physics: dict[str, float], u: float) -> float:
        env = PENDULUM.make_gym(physics)
        env.reset(seed=0)
        env.unwrapped.state = np.array([theta0, 0.0])
        obs, *_ = env.step(np.array([u], dtype=np.float32))
        return float(obs[2])

    base = {"g": 10.0, "m": 1.0, "l": 1.0}
    for physics in (base, {**base, "g": 20.0}, {**base, "l": 2.0}, {**base, "g": 6.0, "l": 0.8}):
        g, length = physics["g"], physics["l"]
        assert first_velocity(physics, 0.0) == pytest.approx(3 * g / (2 * length) * math.sin(theta0) * dt, rel=1e-6)
    torque = first_velocity(base, 1.0) - first_velocity(base, 0.0)
    assert torque == pytest.approx(3.0 * dt, rel=1e-6)  # 3 u / (m l^2) dt with m = l = 1
    assert first_velocity({**base, "m": 0.5}, 1.0) - first_velocity({**base, "m": 0.5}, 0.0) == pytest.approx(2 * torque, rel=1e-6)  # fmt: skip
    assert first_velocity({**base, "g": 20.0}, 0.0) == pytest.approx(2 * first_velocity(base, 0.0), rel=1e-6)


def test_cartpole_wrapper_flips_the_actuator_and_lengthens_the_pole() -> None:
    def one_step(physics: dict[str, float], action: int, theta: float = 0.0) -> np.ndarray:
        env = CARTPOLE.make_gym(physics)
        env.reset(seed=0)
        env.unwrapped.state = np.array([0.0, 0.0, theta, 0.0])
        obs, *_ = env.step(action)
        return obs

    normal, flipped = one_step({"force_mag": 10.0}, 1), one_step({"force_mag": -10.0}, 1)
    assert normal[1] > 0 and flipped[1] == pytest.approx(-normal[1])  # action 1 pushes left when flipped
    # the pole's angular acceleration from a lean, without the push's share, as CartPole's equations say
    for length, masspole in ((0.5, 0.1), (1.0, 0.1), (0.5, 0.4)):
        env_physics = {"length": length, "masspole": masspole, "force_mag": 10.0}
        left, right = one_step(env_physics, 0, 0.1), one_step(env_physics, 1, 0.1)
        total = masspole + 1.0
        expected = 9.8 * math.sin(0.1) / (length * (4 / 3 - masspole * math.cos(0.1) ** 2 / total))
        assert (left[3] + right[3]) / 2 / 0.02 == pytest.approx(expected, rel=1e-5)
    assert abs(one_step({"length": 1.0}, 0, 0.1)[3]) < abs(
        one_step({"length": 0.5}, 0, 0.1)[3]
    )  # a longer pole turns slower


def test_wrapper_refuses_bad_physics_and_changes_nothing() -> None:
    env = gym.make("Pendulum-v1")
    with pytest.raises(ValueError, match=r"g=-1 \(expected in \[0.5, 30\]\).*l=9 \(expected in \[0.1, 5\]\)"):
        PhysicsWrapper(env, {"g": -1.0, "l": 9.0})
    with pytest.raises(ValueError, match=r"unknown parameters \['gravity'\] for Pendulum-v1; known: \['g', 'l', 'm'\]"):
        PhysicsWrapper(env, {"gravity": 5.0})
    assert (env.unwrapped.g, env.unwrapped.m, env.unwrapped.l) == (10.0, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"force_mag=0.1 \(expected with \|value\| in \[0.5, 50\]\)"):
        PhysicsWrapper(gym.make("CartPole-v1"), {"force_mag": 0.1})
    with pytest.raises(ValueError, match="expected one of .*got MountainCarEnv"):
        PhysicsWrapper(gym.make("MountainCar-v0"), {"g": 1.0})
    with pytest.raises(ValueError, match=r"row 1: m=0 \(expected in \[0.1, 5\]\)"):
        PENDULUM.make_env(torch.tensor([[10.0, 1.0, 1.0], [10.0, 0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"expected physics of shape \(E, 3\) for \['length', 'masspole', 'force_mag'\], got \(2, 2\)"):  # fmt: skip
        CARTPOLE.make_env(torch.ones(2, 2))
    with pytest.raises(LookupError, match="unknown environment family 'pendulm'; did you mean 'pendulum'"):
        get_family("pendulm")
    assert list_families() == ["cartpole", "pendulum"]


# ---------------------------------------------------------------------- batched simulators = Gymnasium
@pytest.mark.parametrize("family", [PENDULUM, CARTPOLE], ids=lambda f: f.name)
def test_batched_simulator_equals_gymnasiums_step(family) -> None:
    physics, splits = family.grid()
    picks = [0, len(physics) // 3, len(physics) // 2, len(physics) - 1]  # flipped and normal, every split
    # the same equations: equal up to the last bit of a float64 square (numpy's scalar power
    # and torch's multiplication may round it differently), over 150 steps
    assert check_against_gymnasium(family, physics[picks], torch.Generator().manual_seed(3), steps=150) < 1e-8
    # and step by step, by hand: observations, rewards and terminations
    env = family.make_env(physics[picks])
    env.reset(torch.Generator().manual_seed(1))
    gyms = [family.make_gym(physics[i].tolist()) for i in picks]
    for k, g in enumerate(gyms):
        g.reset(seed=0)
        g.unwrapped.state = env.state[k].numpy().copy()
    gen, alive = torch.Generator().manual_seed(2), [True] * 4
    for _ in range(30):
        a = torch.randint(0, 2, (4,), generator=gen) if env.discrete else 5 * torch.rand(4, 1, generator=gen) - 2.5
        out = env.step(a)
        for k, g in enumerate(gyms):
            if alive[k]:
                obs, reward, terminated, _, _ = g.step(int(a[k]) if env.discrete else a[k].numpy())
                np.testing.assert_allclose(obs, out.obs[k].numpy(), rtol=0, atol=1e-6)
                assert reward == pytest.approx(float(out.reward[k]), rel=1e-12, abs=1e-12)
                assert terminated == bool(out.terminated[k])
                alive[k] = not terminated


def test_batched_simulator_truncates_at_the_horizon_and_checks_actions() -> None:
    env = PENDULUM.make_env(torch.tensor([[10.0, 1.0, 1.0]]))
    env.reset(torch.Generator().manual_seed(0))
    for _ in range(199):
        assert not env.step(torch.zeros(1, 1)).truncated.any()
    assert env.step(torch.zeros(1, 1)).truncated.all()
    with pytest.raises(ValueError, match=r"expected float torques of shape \(1, 1\), got torch.int64 of shape \(1,\)"):
        env.step(torch.zeros(1, dtype=torch.long))
    cart = CARTPOLE.make_env(torch.tensor([[0.5, 0.1, 10.0]]))
    with pytest.raises(ValueError, match=r"actions must be 0 or 1, got \[2\]"):
        cart.step(torch.tensor([2]))


# ---------------------------------------------------------------------- the experts
def _expert_and_random_returns(family, physics: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    expert, rows, gen = make_expert(family, physics), torch.arange(len(physics)).repeat_interleave(2), torch.Generator()
    R_expert = task_returns(family, physics, lambda o, c: expert.act(o, rows), 2, seed=0)
    if family.batched.discrete:
        return R_expert, task_returns(family, physics, lambda o, c: torch.randint(0, 2, (len(o),), generator=gen), 2, 0)
    return R_expert, task_returns(family, physics, lambda o, c: 4 * torch.rand(len(o), 1, generator=gen) - 2, 2, 0)


def test_experts_beat_random_everywhere_and_handle_the_flipped_actuator() -> None:
    for family, margin in ((PENDULUM, 500.0), (CARTPOLE, 400.0)):
        physics, _ = family.grid()
        R_expert, R_random = _expert_and_random_returns(family, physics[:: len(physics) // 12])
        assert bool((R_expert - R_random > margin).all()), (family.name, R_expert, R_random)
    assert bool((CARTPOLE.grid()[0][:, 2] < 0).any())  # the grid holds flipped actuators
    train = torch.tensor([[8.0, 1.0, 1.0], [12.0, 1.0, 1.0]])
    lo, hi = PENDULUM.span()
    assert nearest_tasks(torch.tensor([[9.0, 1.0, 1.0], [13.5, 1.2, 1.0]]), train, lo, hi).tolist() == [0, 1]


# ---------------------------------------------------------------------- the policies
def test_batched_policy_over_environments_equals_a_loop() -> None:
    """One per-sample pass over E environments (each its own generated network) equals a loop of
    plain modules, one per environment, each with the weights generated for its context."""
    torch.manual_seed(0)
    lo, hi = (t.tolist() for t in PENDULUM.span())
    policy = HyperPolicy(3, 3, 1, hidden=(16, 16), trunk=(32,), low=lo, high=hi)
    physics, _ = PENDULUM.grid()
    context = physics[torch.tensor([0, 5, 5, 100, 342, 0, 7])].float()  # repeats share a generation
    obs = torch.randn(7, 3)
    batched = policy(obs, context)
    loop = torch.stack([policy.materialize(context[i])(obs[i : i + 1])[0] for i in range(7)])
    torch.testing.assert_close(batched, loop)
    # the same through a plain copy of the target with the generated tensors as its parameters
    net = copy.deepcopy(policy.target.module)
    for i in (1, 3):
        weights = {k: v[0] for k, v in policy.weights(context[i : i + 1]).items()}
        torch.testing.assert_close(torch.func.functional_call(net, weights, (obs[i : i + 1],))[0], batched[i])
    for cls in (ConcatPolicy, PlainPolicy):
        base = cls(3, 3, 2, hidden=(8,), low=lo, high=hi)
        torch.testing.assert_close(base(obs, context), torch.cat([base(obs[i : i + 1], context[i : i + 1]) for i in range(7)]))  # fmt: skip
    distinct, row = distinct_rows(context)
    torch.testing.assert_close((distinct, row), torch.unique(context, dim=0, return_inverse=True))
    # without gradients an episode's steps reuse one generation, until the parameters change
    with torch.no_grad():
        first = policy(obs, context)
        assert torch.equal(first, policy(obs, context))
        next(policy.hnet.parameters()).add_(0.1)
        assert not torch.equal(first, policy(obs, context))
    with pytest.raises(ValueError, match=r"expected obs \(\.\.\., 3\) and context \(\.\.\., 3\) with the same leading dims, got obs \(7, 3\) and context \(6, 3\)"):  # fmt: skip
        policy(obs, context[:6])


@pytest.mark.parametrize("residual", [False, True], ids=["generated", "residual"])
def test_with_one_task_the_hypernetwork_policy_is_ordinary_training(residual: bool) -> None:
    """Distilling one task: the per-sample hypernetwork policy takes exactly the steps of plain
    hypernetwork training with one weight set (hnet(c) run through torch.func.functional_call)."""
    torch.manual_seed(0)
    physics = torch.tensor([[10.0, 1.0, 1.0]])
    data = collect_demonstrations(PENDULUM, physics, make_expert(PENDULUM, physics), 2, 0.3, torch.Generator().manual_seed(0))  # fmt: skip
    assert torch.equal(data.context, physics.float().expand(len(data), -1))
    lo, hi = (t.tolist() for t in PENDULUM.span())
    policy = HyperPolicy(3, 3, 1, hidden=(16,), trunk=(32,), low=lo, high=hi, residual=residual)
    plain_hnet, net = copy.deepcopy(policy.hnet), copy.deepcopy(policy.target.module)
    opt, plain_opt = torch.optim.Adam(policy.trainable_parameters(), lr=1e-3), torch.optim.Adam(plain_hnet.parameters(), lr=1e-3)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    for idx in torch.randperm(len(data), generator=g).split(64)[:6]:
        batch = Demonstrations(*(t[idx] for t in data))
        opt.zero_grad()
        distillation_loss(policy, batch, discrete=False).backward()
        opt.step()
        plain_opt.zero_grad()
        weights = plain_hnet(physics.float()[0])  # one (unbatched) weight set
        F.mse_loss(torch.func.functional_call(net, weights, (batch.obs,)), batch.action).backward()
        plain_opt.step()
    for (name, a), b in zip(policy.hnet.named_parameters(), plain_hnet.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_the_no_grad_generation_cache_follows_the_contexts_values() -> None:
    # it was keyed on the context's address: a float64 or expanded context is converted into
    # a temporary per call, the next call's temporary reused the address, and the second task
    # silently got the first task's weights; a context written through NumPy kept its key too
    torch.manual_seed(0)
    lo, hi = (t.tolist() for t in PENDULUM.span())
    policy = HyperPolicy(3, 3, 1, hidden=(16,), trunk=(16,), low=lo, high=hi)
    obs = torch.randn(64, 3)
    tasks = [
        torch.tensor([lo], dtype=torch.float64).expand(64, 3),
        torch.tensor([hi], dtype=torch.float64).expand(64, 3),
    ]
    want = [policy(obs, c) for c in tasks]  # gradients on: no cache
    with torch.no_grad():
        got = [policy(obs, c) for c in tasks]
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b)
        context = torch.tensor([lo], dtype=torch.float32).repeat(64, 1)
        first = policy(obs, context)
        context.numpy()[:] = hi  # in place, the version counter untouched
        torch.testing.assert_close(policy(obs, context), want[1].float())
        assert not torch.allclose(first, want[1])


# ---------------------------------------------------------------------- PPO
def test_gae_bootstraps_truncated_episodes_and_not_terminated_ones() -> None:
    """The advantages PPO's rollout gets equal a plain GAE loop: terminated steps do not
    bootstrap, truncated ones do from the critic's value of the final observation."""
    torch.manual_seed(0)
    lo, hi = (t.tolist() for t in CARTPOLE.span())
    ppo = PPO(PlainPolicy(4, 3, 2, (8,), lo, hi), PlainPolicy(4, 3, 1, (8,), lo, hi), True, PPOSettings(steps=40, gamma=0.9, lmbda=0.8))  # fmt: skip
    physics = torch.tensor([[0.5, 0.1, 10.0], [1.0, 0.4, -3.0]])
    env = CARTPOLE.make_env(physics)
    batch, rollout = ppo.collect(env, physics, None, torch.Generator().manual_seed(0))
    assert bool(batch["next", "terminated"].any())
    value, next_value = batch["state_value"][..., 0], batch["next", "state_value"][..., 0]
    reward = batch["next", "reward"][..., 0]
    done, term = batch["next", "done"][..., 0], batch["next", "terminated"][..., 0]
    expected = torch.zeros_like(value)
    for e in range(2):
        running = 0.0
        for t in reversed(range(40)):
            delta = reward[e, t] + 0.9 * next_value[e, t] * (~term[e, t]) - value[e, t]
            running = delta + 0.9 * 0.8 * (~done[e, t]) * running
            expected[e, t] = running
    torch.testing.assert_close(batch["advantage"][..., 0], expected, rtol=1e-4, atol=1e-5)
    # episodes continue into the next rollout
    state = env.state.clone()
    more, _ = ppo.collect(env, physics, rollout, torch.Generator().manual_seed(1))
    torch.testing.assert_close(more["observation"][:, 0], state.float())
    assert sorted(ppo.update(batch, torch.Generator().manual_seed(0))) == ["critic", "entropy", "objective"]


def test_ppo_learns_a_cartpole_with_the_hypernetwork_policy() -> None:
    torch.manual_seed(0)
    lo, hi = (t.tolist() for t in CARTPOLE.span())
    physics = torch.tensor([[0.5, 0.1, 10.0], [0.5, 0.1, -10.0]]).repeat_interleave(4, 0)
    hnet = lambda out: HyperPolicy(4, 3, out, hidden=(16,), trunk=(32,), low=lo, high=hi)  # noqa: E731
    ppo = PPO(hnet(2), hnet(1), True, PPOSettings(steps=128, epochs=4, minibatch=256, reward_scale=0.1))
    env, rollout, gen = CARTPOLE.make_env(physics), None, torch.Generator().manual_seed(0)
    before = task_returns(CARTPOLE, physics[::4], ppo.act, 4, seed=0).mean()
    for _ in range(12):
        batch, rollout = ppo.collect(env, physics, rollout, gen)
        ppo.update(batch, gen)
    after = task_returns(CARTPOLE, physics[::4], ppo.act, 4, seed=0).mean()
    assert after > 2 * before and after > 100, (before, after)


# ---------------------------------------------------------------------- evaluation
def test_evaluation_seeds_make_returns_reproducible() -> None:
    physics = PENDULUM.grid()[0][:10]
    expert = make_expert(PENDULUM, physics)
    rows = torch.arange(10).repeat_interleave(3)
    act = lambda o, c: expert.act(o, rows)  # noqa: E731
    a, b = task_returns(PENDULUM, physics, act, 3, seed=7), task_returns(PENDULUM, physics, act, 3, seed=7)
    assert torch.equal(a, b)
    assert not torch.equal(a, task_returns(PENDULUM, physics, act, 3, seed=8))
    torch.testing.assert_close(normalised_return(a, a - 100, a + 100), torch.full_like(a, 0.5))
    assert math.isnan(float(normalised_return(torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([2.0]))[0]))
    assert split_means(torch.tensor([1.0, 3.0, float("nan")]), ["train", "train", "x"], ["train", "x"]) == {"train": 2.0, "x": pytest.approx(float("nan"), nan_ok=True)}  # fmt: skip
    with pytest.raises(ValueError, match="episodes must be an int >= 1, got 0"):
        task_returns(PENDULUM, physics, act, 0, seed=0)
    with pytest.raises(ValueError, match=r"normalised_return: .* one shape, got \(10, 1\), \(10,\) and \(10,\)"):
        normalised_return(a.unsqueeze(1), a - 100, a + 100)  # would broadcast to (10, 10)
    with pytest.raises(ValueError, match=r"split_means: .* got values \(3,\) and 1 split names"):
        split_means(torch.tensor([1.0, 2.0, 3.0]), ["train"], ["train"])


# ---------------------------------------------------------------------- the recipe
_QUICK = ["--quick", "--progress", "false", "--threads", "1", "--checkpoint_every", "1"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("rl") / "full"
    code, err = _run(["rl", *_QUICK, "--out", str(out)])
    assert code == 0, err
    return out, json.loads((out / "results.json").read_text())


def test_quick_run_writes_every_output(uninterrupted) -> None:
    out, results = uninterrupted
    names = {p.name for p in out.iterdir()}
    assert {"results.json", "summary.md", "grid_pendulum.png", "grid_cartpole.png", "ppo_pendulum.png"} <= names
    assert {f"{f}_{r}_hnet.safetensors" for f in ("pendulum", "cartpole") for r in ("distill", "ppo")} <= names
    for family, n in (("pendulum", 343), ("cartpole", 686)):
        m = results["metrics"][family]
        assert m["gym_check_max_difference"] < 1e-8
        assert set(m["normalised_return"]) == {f"{r}/{p}" for r in ("distill", "ppo") for p in ("hnet", "concat", "plain")} | {"nearest expert"}  # fmt: skip
        assert all(len(v) == n for v in m["returns"].values())
        assert m["tasks"]["train"] == (27 if family == "pendulum" else 54)
    summary = (out / "summary.md").read_text()
    assert "hypernetwork (distill)" in summary and "flipped actuator" in summary
    from hyperdnn.engine import load_model

    policy = load_model(out, "pendulum_distill_hnet")
    assert policy(torch.zeros(2, 3), torch.tensor([[10.0, 1.0, 1.0]] * 2)).shape == (2, 1)


@pytest.mark.parametrize("stop_after", [8])
def test_resume_ends_with_the_same_results(tmp_path: Path, monkeypatch, uninterrupted, stop_after: int) -> None:
    """Interrupted inside PPO's training (checkpoint 8: after the pendulum hypernetwork's first
    iteration, episodes under way; the distillation units before it are done), resumed, the run
    ends with the uninterrupted run's numbers."""
    out = tmp_path / "run"
    original, saves = Checkpointer.save, []

    def save_then_stop(self, tensors, state):
        original(self, tensors, state)
        saves.append(state.get("unit"))
        if len(saves) == stop_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpointer, "save", save_then_stop)
    code, err = _run(["rl", *_QUICK, "--out", str(out)])
    assert code == 130 and "--resume" in err
    assert saves[-1] == 4  # inside pendulum/ppo/hnet, the run's fifth unit
    monkeypatch.setattr(Checkpointer, "save", original)
    code, err = _run(["rl", "--out", str(out), "--resume", "--progress", "false"])
    assert code == 0, err
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["resumed"] is True
    for family in ("pendulum", "cartpole"):
        a, b = resumed["metrics"][family], uninterrupted[1]["metrics"][family]
        assert a["returns"] == b["returns"] and a["curves"] == b["curves"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--families", "pendulum,mountaincar"], "--families: expected one of {pendulum, cartpole}, got 'mountaincar'"),
        (["--routes", "dqn"], "--routes: expected one of {distill, ppo}, got 'dqn'"),
        (["--eval_episodes", "0"], "--eval_episodes: expected an int >= 1, got 0"),
        (["--demo_noise", "1.5"], "--demo_noise: expected a float in [0, 1], got 1.5"),
    ],
)
def test_bad_input_is_one_line_and_nothing_is_written(tmp_path: Path, argv, message) -> None:
    out = tmp_path / "bad"
    code, err = _run(["rl", *argv, "--out", str(out)])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_a_missing_rl_extra_is_one_line_before_anything_is_written(tmp_path: Path) -> None:
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text("import sys\nsys.modules['gymnasium'] = None\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, "-m", "hyperdnn.cli", "run", "rl", "--quick", "--out", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert (
        proc.returncode == 2
        and proc.stderr.strip() == "hyperdnn run rl: error: needs gymnasium: pip install 'hyperdnn[rl]'"
    ), proc.stderr
    assert not (tmp_path / "out").exists()


def test_grid_figure_shares_one_colour_scale_and_checks_its_panels() -> None:
    from hyperdnn.engine.report import grid_figure

    a, b = torch.tensor([[0.0, 0.5], [1.0, float("nan")]]), torch.tensor([[0.2, 0.3], [0.4, 2.0]])
    fig = grid_figure({"a": a, "b": b}, ["x1", "x2"], ["y1", "y2"], "t", "x", "y", "value", a > 0.4, (0.0, 1.0))
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 2 and all(im.get_clim() == (0.0, 1.0) for im in images)
    assert len(fig.axes[0].patches) == 2  # the two marked cells are outlined
    with pytest.raises(ValueError, match=r"panel 'b' has shape \(3,\)"):
        grid_figure({"a": a, "b": torch.zeros(3)}, ["1", "2"], ["1", "2"], "t", "x", "y", "v")
    with pytest.raises(ValueError, match="1 x ticks and 2 y ticks for panels of shape"):
        grid_figure({"a": a}, ["1"], ["1", "2"], "t", "x", "y", "v")
