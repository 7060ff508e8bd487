"""The generator zoo at tiny presets: sampling, seeded training, save/load round trip, a quick build."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aigclab.data.build import build_mini
from aigclab.data.mini import fake_set, load_mini, mini_manifest
from aigclab.data.zoo import (
    create_generator,
    fit,
    list_generators,
    load_generator,
    round_to_fp16,
    save_generator,
    unet_config,
)
from aigclab.errors import ConfigError, DataError, UnknownNameError

PATCHES = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)


def test_zoo_has_seven_generators_and_families():
    names = list_generators()  # scenes: the pixel DDPM on procedural scenes, not part of AIGC-Mini
    assert names == ["dcgan", "ddim", "ddpm", "flow", "ldm", "scenes", "upgan", "vae"]
    families = {create_generator(n, preset=f"{n}-tiny").family for n in names}
    assert len(families) == 7


@pytest.mark.parametrize("name", ["dcgan", "upgan", "vae", "ddpm", "ldm", "flow"])
def test_fit_is_seeded_and_repeatable(name):
    a = fit(create_generator(name, preset=f"{name}-tiny"), PATCHES, log=lambda _: None)
    b = fit(create_generator(name, preset=f"{name}-tiny"), PATCHES, log=lambda _: None)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    s1 = a.sample(5, torch.Generator().manual_seed(3))
    s2 = a.sample(5, torch.Generator().manual_seed(3))
    assert s1.shape == (5, 32, 32, 3) and s1.dtype == np.uint8
    np.testing.assert_array_equal(s1, s2)


def test_save_load_round_trip_gives_same_samples(tmp_path):
    model = round_to_fp16(fit(create_generator("ddpm", preset="ddpm-tiny"), PATCHES, log=lambda _: None))
    save_generator(model, tmp_path)
    meta = json.loads((tmp_path / "ddpm.json").read_text())
    assert meta["unet_config"]["block_out_channels"] == [8, 16]
    loaded = load_generator("ddpm", root=tmp_path, preset="ddpm-tiny")
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    np.testing.assert_array_equal(model.sample(3, gen()), loaded.sample(3, gen()))
    ddim = load_generator("ddim", root=tmp_path, preset="ddim-tiny")  # reuses ddpm's weights
    assert torch.equal(ddim.unet.conv_in.weight, loaded.unet.conv_in.weight)
    assert unet_config(ddim.config) == meta["unet_config"]


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(UnknownNameError, match="known: dcgan"):
        create_generator("stylegan9")
    with pytest.raises(ConfigError, match="no preset"):
        create_generator("vae", preset="vae-huge")
    with pytest.raises(DataError, match="no trained weights"):
        load_generator("vae", root=tmp_path)


def test_quick_build_is_loadable_and_rebuilds_bit_identically(tmp_path: Path):
    for run in ("a", "b"):  # two builds from scratch, each with its own checkpoint folder
        build_mini(
            tmp_path / run,
            work=tmp_path / f"work-{run}",
            generators=["dcgan", "vae"],
            quick=True,
            log=lambda _: None,
        )
    assert (tmp_path / "a" / "manifest.json").read_text() == (tmp_path / "b" / "manifest.json").read_text()
    out = tmp_path / "a"
    man = mini_manifest(out)
    assert set(man["generators"]) == {"dcgan", "vae"} and man["backbone"]["trained_on"] == ["dcgan"]
    data = load_mini("test", root=out)
    assert len(data) == man["real"]["test"]["n"] + 2 * 24
    vae = fake_set("vae", "train", out)
    assert (vae.labels == 1).all() and vae.images.shape == (16, 32, 32, 3)
