"""The models a learner writes in a notebook, built here as they would write them, trained a few
steps on real MNIST and saved the usual way: ``torch.save(model.state_dict(), ...)``.

Shared by tests/test_importer.py and tests/test_page_own_model.py (and the browser test).
"""

from __future__ import annotations

import functools
import io

import torch
from torch import nn

from digitrec import data
from digitrec.layers import MNIST_MEAN, MNIST_STD


class TinyVGG(nn.Module):
    """learnpytorch.io's TinyVGG (notebook 03), with its own attribute names, for 1 x 28 x 28 digits."""

    def __init__(self, input_shape: int = 1, hidden_units: int = 10, output_shape: int = 10) -> None:
        super().__init__()
        self.conv_block_1 = nn.Sequential(
            nn.Conv2d(input_shape, hidden_units, kernel_size=3, stride=1, padding=1), nn.ReLU(),
            nn.Conv2d(hidden_units, hidden_units, kernel_size=3, stride=1, padding=1), nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.conv_block_2 = nn.Sequential(
            nn.Conv2d(hidden_units, hidden_units, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden_units, hidden_units, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(hidden_units * 7 * 7, output_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.conv_block_2(self.conv_block_1(x)))


class SigmoidNet(nn.Module):
    """A class-style FC net (fc1, fc2, ... attributes) with sigmoid, the textbook's first network."""

    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(784, 30)
        self.act = nn.Sigmoid()
        self.fc2 = nn.Linear(30, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.flatten(x))))


def build(key: str) -> nn.Module:
    if key == "sequential_fc":  # nn.Sequential with other widths than FCNet's
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 40), nn.ReLU(), nn.Linear(40, 24), nn.ReLU(), nn.Linear(24, 10))
    if key == "tinyvgg":
        return TinyVGG()
    if key == "cnn5_stride2_avg":  # 5 x 5 kernels, stride 2, average pooling
        return nn.Sequential(
            nn.Conv2d(1, 8, 5, stride=2, padding=2), nn.ReLU(), nn.AvgPool2d(2),  # (8, 7, 7)
            nn.Conv2d(8, 16, 5, padding=2), nn.ReLU(), nn.AvgPool2d(2),  # (16, 3, 3)
            nn.Flatten(), nn.Linear(16 * 3 * 3, 10),
        )
    if key == "batchnorm_dropout":
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),  # (8, 14, 14)
            nn.Flatten(), nn.Dropout(0.25), nn.Linear(8 * 14 * 14, 32), nn.BatchNorm1d(32), nn.ReLU(),
            nn.Dropout(0.5), nn.Linear(32, 10),
        )
    if key == "sigmoid":
        return SigmoidNet()
    raise KeyError(key)


# What digitrec should infer for each, and what the notebook fed it.
EXPECTED = {
    "sequential_fc": ("flatten linear(40) relu linear(24) relu linear(10)", "totensor"),
    "tinyvgg": ("conv3x3(10,p=1) relu conv3x3(10,p=1) relu maxpool2 conv3x3(10,p=1) relu conv3x3(10,p=1) relu "
                "maxpool2 flatten linear(10)", "mnist"),
    "cnn5_stride2_avg": ("conv5x5(8,s=2,p=2) relu avgpool2 conv5x5(16,p=2) relu avgpool2 flatten linear(10)", "totensor"),
    "batchnorm_dropout": ("conv3x3(8,p=1) bn2d relu maxpool2 flatten dropout(0.5) linear(32) bn1d relu dropout(0.5) "
                          "linear(10)", "totensor"),
    "sigmoid": ("flatten linear(30) sigmoid linear(10)", "mnist"),
}
KEYS = tuple(EXPECTED)


def notebook_input(x: torch.Tensor, norm: str) -> torch.Tensor:
    """What the learner's notebook fed the model: ToTensor only, or Normalize((0.1307,), (0.3081,))."""
    return (x - MNIST_MEAN) / MNIST_STD if norm == "mnist" else x


# Adam steps of 64 digits each model is trained for: the fewest at which its import still infers the
# right layers and normalisation and it reads over 70 % of the test digits (tests/test_importer.py).
# The sigmoid net needs more: its activation is told from tanh/GELU by accuracy, which takes training.
STEPS = {"sequential_fc": 150, "tinyvgg": 150, "cnn5_stride2_avg": 150, "batchnorm_dropout": 150, "sigmoid": 400}


@functools.lru_cache(maxsize=None)
def trained(key: str, steps: int | None = None) -> tuple[nn.Module, bytes]:
    """The model trained ``steps`` (default STEPS[key]) Adam steps of 64 real training digits, in eval mode,
    and its saved state dict. Cached: every test in a process shares one trained model per key."""
    steps = STEPS[key] if steps is None else steps
    mnist = data.load_mnist(download=False)
    torch.manual_seed(0)
    model = build(key)
    norm = EXPECTED[key][1]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(mnist.train), (64,), generator=g)
        x = notebook_input(mnist.train.images[idx].float().div(255).unsqueeze(1), norm)  # (64, 1, 28, 28)
        loss = nn.functional.cross_entropy(model(x), mnist.train.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return model, buffer.getvalue()
