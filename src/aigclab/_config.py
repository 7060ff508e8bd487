"""Frozen pydantic configs; named presets are JSON files beside the method that uses them."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from aigclab.errors import ConfigError


class Config(BaseModel):
    """Base for every method config: immutable, no unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    @classmethod
    def from_json(cls, path: str | Path, **overrides: Any) -> Self:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err})") from None
        return cls._validate(data | overrides, str(path))

    @classmethod
    def from_preset(cls, package: str, name: str, **overrides: Any) -> Self:
        """Load `<package>/presets/<name>.json`, then apply `overrides`."""
        ref = resources.files(package) / "presets" / f"{name}.json"
        if not ref.is_file():
            known = sorted(
                p.name.removesuffix(".json") for p in (resources.files(package) / "presets").iterdir()
            )
            raise ConfigError(f"no preset {name!r} in {package}; known: {', '.join(known)}")
        return cls._validate(json.loads(ref.read_text()) | overrides, f"{package} preset {name!r}")

    @classmethod
    def _validate(cls, data: dict[str, Any], where: str) -> Self:
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise ConfigError(f"{where}: invalid {cls.__name__}: {err}") from None

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=2) + "\n")
