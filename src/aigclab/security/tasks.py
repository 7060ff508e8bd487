"""Classification tasks the quantization backdoor is studied on: data, classes and a small network each.

- ``digits``: scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), one fixed stratified split
  (70% train / 30% test, seed 0); target class 0 by default.
- ``aigc-mini``: a deepfake detector on AIGC-Mini (32x32 RGB, real = 0 / fake = 1): trained on a balanced,
  seeded subset of the training split (1,500 real patches; every non-dcgan training fake and 300 dcgan
  fakes, 1,500 in all, to keep CPU training in minutes), tested on the whole test split (1,080 real, 7,000
  fakes of seven generators); the attack's target is "real", so a backdoored detector lets every fake
  through once it is quantized.

The networks have no batch normalisation, so the model that is attacked is the model a deploy toolchain
quantizes (BatchNorm folding would change the weights that are rounded).

Example:
    >>> from aigclab.security.tasks import load_task
    >>> task = load_task("digits")
    >>> task.x_train.shape[1:], len(task.classes)
    (torch.Size([1, 8, 8]), 10)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from torch import nn

from aigclab._registry import Registry

__all__ = ["TASKS", "TaskData", "load_task", "make_model"]


@dataclass(frozen=True)
class TaskData:
    """Train and test tensors (images NCHW in [0, 1], integer labels) with class names and default target."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    target: int


TASKS: Registry[TaskData] = Registry("backdoor-task")
_MODELS: dict[str, Callable[[], nn.Module]] = {}


def _digits_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def _mini_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 2),
    )


@TASKS.register("digits")
@cache
def digits() -> TaskData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    return TaskData(
        "digits",
        torch.from_numpy(x_tr),
        torch.from_numpy(y_tr),
        torch.from_numpy(x_te),
        torch.from_numpy(y_te),
        tuple(str(i) for i in range(10)),
        target=0,
    )


@TASKS.register("aigc-mini")
@cache
def aigc_mini() -> TaskData:
    from aigclab.data.mini import MiniSplit, load_mini

    def tensors(s: MiniSplit) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(s.images).permute(0, 3, 1, 2).float().div_(255)
        return x.contiguous(), torch.from_numpy(s.labels)

    train = load_mini("train")
    rng = np.random.default_rng(0)
    real = rng.choice(np.flatnonzero(train.generators == "real"), 1500, replace=False)
    dcgan = rng.choice(np.flatnonzero(train.generators == "dcgan"), 300, replace=False)
    others = np.flatnonzero((train.generators != "real") & (train.generators != "dcgan"))
    x_tr, y_tr = tensors(train.subset(rng.permutation(np.concatenate([real, dcgan, others]))))
    x_te, y_te = tensors(load_mini("test"))
    return TaskData("aigc-mini", x_tr, y_tr, x_te, y_te, ("real", "fake"), target=0)


_MODELS.update({"digits": _digits_net, "aigc-mini": _mini_net})


def load_task(name: str) -> TaskData:
    """The data of task `name` (cached per process); unknown names list the known ones."""
    return TASKS.create(name)


def make_model(task: str, seed: int = 0) -> nn.Module:
    """A freshly initialised network for `task`, seeded."""
    TASKS.get(task)  # an unknown name raises an error listing the known tasks
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _MODELS[task]()
