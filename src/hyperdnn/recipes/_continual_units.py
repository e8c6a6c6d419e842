"""The units of a ``continual`` run: which models train, in which scenarios, in how many stages.

The recipe (:mod:`hyperdnn.recipes.continual`), its checks and its report read the same plan.

Example::

    >>> from hyperdnn.recipes.continual import ContinualConfig
    >>> unit_keys(ContinualConfig(methods=("hnet", "ewc", "dgr"), scenarios=("CL1", "CL3")))
    ['hnet', 'ewc/CL1', 'ewc/CL3', 'dgr/CL3']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hyperdnn.engine.loop import Unit

if TYPE_CHECKING:
    from hyperdnn.recipes.continual import ContinualConfig

__all__ = ["REPLAY", "unit_keys", "scenarios_of", "plan"]

#: methods with generative replay: trained in CL2 and CL3 only (CL1 gives the task)
REPLAY = ("hnet+r", "dgr")


def unit_keys(cfg: ContinualConfig) -> list[str]:
    """The models a run trains: the hypernetwork and separate networks once (every scenario is
    measured on the same model), each other method once per scenario (``"ewc/CL2"``); the
    replay methods (``hnet+r``, ``dgr``) in CL2 and CL3 only."""
    keys = []
    for m in cfg.methods:
        if m in ("hnet", "separate"):
            keys.append(m)
        else:
            keys += [f"{m}/{s}" for s in cfg.scenarios if not (m in REPLAY and s == "CL1")]
    return keys


def scenarios_of(key: str, cfg: ContinualConfig) -> tuple[str, ...]:
    """The scenarios a unit is measured in: its own (``"ewc/CL2"``), or all of the run's."""
    return (key.split("/")[1],) if "/" in key else cfg.scenarios


def plan(cfg: ContinualConfig, num_tasks: int) -> list[Unit]:
    """The units of a run (:func:`unit_keys`): a task per stage, joint training one stage over
    all tasks."""
    tasks = tuple(f"task {t + 1:>2}/{num_tasks}" for t in range(num_tasks))
    joint = (f"all {num_tasks} tasks",)
    epochs = {"joint": cfg.joint_epochs or cfg.task_epochs}
    return [
        Unit(k, joint if k.startswith("joint/") else tasks, epochs.get(k.split("/")[0], cfg.task_epochs))
        for k in unit_keys(cfg)
    ]
