"""Registry, frozen configs with presets, and the CLI root."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError
from typer.testing import CliRunner

from aigclab._config import Config
from aigclab._registry import Registry
from aigclab.cli import app
from aigclab.errors import ConfigError, UnknownNameError


class TinyCfg(Config):
    width: int = 4
    name: str = "a"


def test_registry_create_list_and_unknown_name() -> None:
    reg: Registry[int] = Registry("test-number")
    reg.register("two")(lambda scale=1: 2 * scale)

    @reg.register()
    def forty_two() -> int:
        return 42

    assert reg.list() == ["forty-two", "two"] and reg.create("two", scale=3) == 6
    with pytest.raises(UnknownNameError, match="unknown test-number 'three'; known: forty-two, two"):
        reg.create("three")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("two")(lambda: 0)


def test_config_is_frozen_strict_and_loads_json(tmp_path: Path) -> None:
    cfg = TinyCfg()
    with pytest.raises(ValidationError):
        cfg.width = 5  # type: ignore[misc]
    (tmp_path / "c.json").write_text(json.dumps({"width": 8}))
    assert TinyCfg.from_json(tmp_path / "c.json", name="b") == TinyCfg(width=8, name="b")
    (tmp_path / "bad.json").write_text(json.dumps({"widht": 8}))
    with pytest.raises(ConfigError, match=r"bad\.json: invalid TinyCfg"):
        TinyCfg.from_json(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="config file not found"):
        TinyCfg.from_json(tmp_path / "none.json")


def test_cli_help_info_and_data_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    assert "data" in runner.invoke(app, ["--help"]).output
    info = runner.invoke(app, ["info"])
    assert info.exit_code == 0 and "degradation" in info.output and "torch" in info.output
    for i, sub in enumerate(["real", "fake/gan"]):
        (tmp_path / sub).mkdir(parents=True)
        Image.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)).save(tmp_path / sub / "x.png")
    (tmp_path / "real" / "bad.png").write_bytes(b"junk")
    scan = runner.invoke(app, ["data", "scan", str(tmp_path), "--check"])
    assert scan.exit_code == 0 and "2 decoded, 1 skipped" in scan.output
    out = tmp_path / "out"
    deg = runner.invoke(
        app, ["data", "degrade", str(tmp_path / "real"), str(out), "--spec", "jpeg:quality=20"]
    )
    assert deg.exit_code == 0 and (out / "x.png").is_file() and "skipped" in deg.output


def test_cli_user_error_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    # the console script's entry point, run by this interpreter (no `aigclab` on PATH needed)
    entry = [sys.executable, "-c", "from aigclab.cli import main; main()"]
    proc = subprocess.run([*entry, "data", "scan", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "expected a 'real/'" in proc.stderr and "Traceback" not in proc.stdout + proc.stderr
