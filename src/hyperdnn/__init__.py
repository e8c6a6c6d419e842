"""hyperdnn: hypernetworks for any PyTorch module.

A hypernetwork H(c; phi) generates the weights theta of a target network F(x; theta); only
phi is trained, end to end through theta. See ``docs/architecture.md``.
"""

from hyperdnn import _version
from hyperdnn.adapters import Adapter, insert_adapters, remove_adapters
from hyperdnn.conditioners import (
    Conditioned,
    Conditioner,
    Continuous,
    DataEncoder,
    DescriptionEncoder,
    Execution,
    LearnedLatent,
    Noise,
    SetEncoder,
    TaskEmbedding,
    create_conditioner,
    list_conditioners,
    register_conditioner,
)
from hyperdnn.dynamic import DynamicHyperNetwork, describe_components
from hyperdnn.heads import (
    Chunked,
    ComponentWise,
    Head,
    HeadModule,
    LowRank,
    MultiHead,
    Once,
    create_head,
    list_heads,
    register_head,
)
from hyperdnn.hypernet import HyperModel, HyperNetwork, compile_settings
from hyperdnn.layers import HyperLSTM, HyperLSTMCell
from hyperdnn.norm_stats import NormStats
from hyperdnn.spec import Role, TensorSpec, WeightSpec
from hyperdnn.target import Target
from hyperdnn.trunks import (
    CNN,
    MLP,
    RNN,
    Attention,
    ModuleTrunk,
    TokenMixer,
    TokenReadout,
    Trunk,
    TrunkModule,
    create_trunk,
    list_trunks,
    register_trunk,
)

__version__ = _version.package_version()

__all__ = [
    "Adapter",
    "Attention",
    "CNN",
    "Chunked",
    "ComponentWise",
    "Conditioned",
    "Conditioner",
    "Continuous",
    "DataEncoder",
    "DescriptionEncoder",
    "DynamicHyperNetwork",
    "Execution",
    "Head",
    "HeadModule",
    "HyperModel",
    "HyperLSTM",
    "HyperLSTMCell",
    "HyperNetwork",
    "LearnedLatent",
    "LowRank",
    "MLP",
    "ModuleTrunk",
    "MultiHead",
    "Noise",
    "NormStats",
    "Once",
    "RNN",
    "Role",
    "SetEncoder",
    "Target",
    "TaskEmbedding",
    "TensorSpec",
    "TokenMixer",
    "TokenReadout",
    "Trunk",
    "TrunkModule",
    "WeightSpec",
    "compile_settings",
    "create_conditioner",
    "create_head",
    "create_trunk",
    "describe_components",
    "insert_adapters",
    "list_conditioners",
    "list_heads",
    "list_trunks",
    "register_conditioner",
    "register_head",
    "register_trunk",
    "remove_adapters",
    "__version__",
]
