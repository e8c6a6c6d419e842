"""The README example: per-sample weights from a data-conditioned hypernet, in seconds on a CPU.

Needs the data extra, for scikit-learn's digits: pip install 'hyperdnn[data]' (or -e ".[data]").

    python examples/quickstart.py

Runtime: about 5 seconds on 2 CPU cores. Expected: about 94% test accuracy.
"""

import torch
from torch import nn

from hyperdnn import MLP, Chunked, DataEncoder, HyperModel, HyperNetwork, Target
from hyperdnn.data import load_digits

torch.manual_seed(0)
data = load_digits()
net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))  # any nn.Module
target = Target(net)  # generates every parameter; Target(net, select="2.*") picks some
encoder = DataEncoder(nn.Sequential(nn.Linear(64, 16), nn.Tanh()), out_features=16)
hnet = HyperNetwork(target, encoder, MLP((64,)), Chunked(chunk_size=512, embed_dim=8))
model = HyperModel(hnet, target)  # model(x): a different weight set for every sample
print(model.summary())
opt = torch.optim.Adam(model.trainable_parameters(), lr=3e-3)
for _ in range(300):
    idx = torch.randint(0, len(data.x_train), (128,))
    loss = nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
acc = (model(data.x_test).argmax(1) == data.y_test).float().mean()
print(f"test accuracy {acc:.3f}")
