"""Saved models of the security part: safetensors weights plus the task and training config as metadata.

Example:
    >>> import tempfile, pathlib
    >>> from aigclab.security.tasks import make_model
    >>> from aigclab.security.model_io import load_model, save_model
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "m.safetensors"
    >>> save_model(make_model("digits"), path, "digits", {"lam": 0.0})
    >>> model, task, meta = load_model(path)
    >>> task, meta["lam"]
    ('digits', 0.0)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from aigclab.errors import AigclabError
from aigclab.security.tasks import TASKS, make_model

__all__ = ["load_model", "save_model"]

_KIND = "aigclab-security-model"


def save_model(model: nn.Module, path: str | Path, task: str, meta: dict[str, Any]) -> None:
    """Write `model`'s weights with its task and `meta` (JSON-serialisable) to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"kind": _KIND, "task": task, "meta": json.dumps(meta)})


def load_model(path: str | Path) -> tuple[nn.Module, str, dict[str, Any]]:
    """Read a model written by `save_model`: (model in eval mode, task name, meta)."""
    path = Path(path)
    if not path.is_file():
        raise AigclabError(f"{path}: not a regular file")
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as fh:
            header = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise AigclabError(f"{path}: not a safetensors file ({err})") from None
    if header.get("kind") != _KIND or header.get("task") not in TASKS:
        raise AigclabError(f"{path}: not an aigclab security model (no known task in its metadata)")
    task = header["task"]
    model = make_model(task)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        raise AigclabError(f"{path}: weights do not fit the {task} network ({err})") from None
    return model.eval(), task, json.loads(header.get("meta", "{}"))
