"""Masked-Jacobian edit directions: power iteration vs explicit SVD, projections, inversion round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import jacrev

from aigclab.diffusion.jacobian_edit import (
    ATTRIBUTES,
    box_mask,
    edit,
    find_directions,
    invert,
    power_iteration,
    project_away,
    region_attributes,
    sample_from,
)
from aigclab.diffusion.models import load_model
from aigclab.errors import AigclabError


@pytest.fixture(scope="module")
def tiny():  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    return load_model("tiny")


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(4, 6, 3, padding=1), nn.GroupNorm(2, 6), nn.SiLU(), nn.Upsample(scale_factor=2),
        nn.Conv2d(6, 3, 3, padding=1),
    ).eval()  # fmt: skip


def test_power_iteration_matches_explicit_jacobian_svd() -> None:
    net = _tiny_net()
    mask = box_mask(8, 0, 0, 4, 8)

    def f(h: torch.Tensor) -> torch.Tensor:
        return net(h) * mask

    h = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    jac = jacrev(f)(h).reshape(3 * 8 * 8, 4 * 4 * 4)
    _, s, vh = torch.linalg.svd(jac)
    u, sigma = power_iteration(f, h, 3, torch.Generator().manual_seed(2), iters=500, tol=1e-12)
    assert torch.allclose(sigma[:, 0], s[:3], rtol=1e-3)
    cos = (u.flatten(1) @ vh[:3].T).abs().diagonal()
    assert (cos > 0.99).all(), cos


def test_batched_power_iteration_solves_each_sample_on_its_own() -> None:
    net = _tiny_net()
    mask = box_mask(8, 2, 2, 4, 4)

    def f(h: torch.Tensor) -> torch.Tensor:
        return net(h) * mask

    h = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    u, sigma = power_iteration(f, h, 2, torch.Generator().manual_seed(4), iters=400, tol=1e-12)
    assert u.shape == (2, 2, 4, 4, 4) and sigma.shape == (2, 2)
    for b in range(2):
        jac = jacrev(f)(h[b : b + 1]).reshape(3 * 8 * 8, 4 * 4 * 4)
        _, s, vh = torch.linalg.svd(jac)
        assert torch.allclose(sigma[:, b], s[:2], rtol=1e-3)
        assert ((u[:, b].flatten(1) @ vh[:2].T).abs().diagonal() > 0.99).all()


def test_projections_are_orthogonal_to_what_they_project_against() -> None:
    g = torch.Generator().manual_seed(0)
    u = torch.randn(3, 2, 4, 4, generator=g)
    against, _ = torch.linalg.qr(torch.randn(32, 5, generator=g))
    against = against.T.reshape(5, 2, 4, 4)
    per = project_away(u, against, "per-direction")
    null = project_away(u, against, "nullspace")
    for i in range(3):
        assert abs(float((per[i] * against[i]).sum())) < 1e-5
        assert float((per[i] * against[(i + 1) % 3]).sum()) != pytest.approx(0, abs=1e-3)  # only rank 1
    assert (null.flatten(1) @ against.flatten(1).T).abs().max() < 1e-5
    assert torch.allclose(null.flatten(1).norm(dim=1), torch.ones(3))


def test_nullspace_direction_moves_the_unmasked_region_less(tiny) -> None:  # type: ignore[no-untyped-def]
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    xt = invert(tiny, image, 50, 5)
    mask = box_mask(16, 0, 0, 8, 8)
    kw = {"k": 1, "iters": 15, "seed": 0}
    plain = find_directions(tiny, xt, 50, mask, projection="none", **kw)  # type: ignore[arg-type]
    null = find_directions(tiny, xt, 50, mask, projection="nullspace", null_rank=4, **kw)  # type: ignore[arg-type]
    base = sample_from(tiny, xt, 50, 5)

    def outside_change(d: torch.Tensor) -> float:
        out = edit(tiny, xt, 50, 5, d, [0.5 * plain.h_norm], edit_steps=1)
        return float(((out - base) ** 2 * (1 - mask)).sum())

    assert outside_change(null.u[0]) < outside_change(plain.u[0])


def test_inversion_then_sampling_reconstructs_the_image() -> None:
    torch.set_num_threads(1)
    model = load_model("ddpm")
    y, x = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    image = torch.stack([0.6 * x, 0.6 * y, 0.4 * x * y])[None]
    xt = invert(model, image, 400, 10)
    assert (xt - image).pow(2).mean() > 0.05  # really noised
    rec = sample_from(model, xt, 400, 10)
    assert (rec - image).pow(2).mean() < 2e-3


def test_zero_strength_is_the_reconstruction_and_mask_shape_is_checked(tiny) -> None:  # type: ignore[no-untyped-def]
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    xt = invert(tiny, image, 50, 4)
    d = find_directions(tiny, xt, 50, box_mask(16, 4, 4, 6, 6), k=1, iters=5, projection="per-direction")
    out = edit(tiny, xt, 50, 4, d.u[0], [0.0, 2.0])
    assert torch.allclose(out[0:1], sample_from(tiny, xt, 50, 4))
    assert (out[1] - out[0]).abs().max() > 1e-3
    with pytest.raises(AigclabError, match="mask"):
        find_directions(tiny, xt, 50, box_mask(8, 0, 0, 4, 4), k=1)


def test_cli_directions_and_edit_write_images(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import numpy as np
    from PIL import Image
    from typer.testing import CliRunner

    from aigclab.diffusion.cli import app

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "img.png")
    mask = np.zeros((16, 16), np.uint8)
    mask[2:8, 2:8] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    common = ["--mask", str(tmp_path / "mask.png"), "--model", "tiny", "--steps", "3", "--iters", "3"]
    common += ["--null-rank", "3"]
    img = str(tmp_path / "img.png")
    res = CliRunner().invoke(app, ["directions", img, *common, "--k", "2", "--out", str(tmp_path / "p.png")])
    assert res.exit_code == 0, res.output
    assert "direction 1" in res.output
    assert Image.open(tmp_path / "p.png").size == (4 * (3 * 18 + 2), 4 * (2 * 18 + 2))
    res = CliRunner().invoke(
        app, ["edit", img, *common, "--direction", "1", "--out", str(tmp_path / "s.png")]
    )
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "s.png").size == (4 * (6 * 18 + 2), 4 * 20)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "empty.png")
    bad = [*common[2:], "--mask", str(tmp_path / "empty.png")]
    res = CliRunner().invoke(app, ["edit", img, *common, "--null-rank", "0"])
    assert res.exit_code != 0
    assert "null_rank" in str(res.exception)
    res = CliRunner().invoke(app, ["edit", img, *bad])
    assert res.exit_code != 0
    assert "empty.png" in str(res.exception)


def test_region_attributes_measure_what_they_name_inside_the_mask_only() -> None:
    mask = box_mask(16, 0, 0, 8, 8)
    grey = torch.zeros(1, 3, 16, 16)
    a = dict(zip(ATTRIBUTES, region_attributes(grey, mask)[0].tolist(), strict=True))
    assert a["saturation"] == pytest.approx(0) and a["contrast"] == pytest.approx(0)
    assert a["brightness"] == pytest.approx(0.5) and a["edge_energy"] == pytest.approx(0)
    outside = grey.clone()
    outside[..., 8:, :] = 1.0  # a change outside the mask is not seen
    assert torch.allclose(region_attributes(outside, mask), region_attributes(grey, mask))
    red = grey.clone()
    red[:, 0] = 0.8
    r = dict(zip(ATTRIBUTES, region_attributes(red, mask)[0].tolist(), strict=True))
    assert r["red_green"] > 0.3 and r["blue_yellow"] < 0 and r["saturation"] > 0.3
    stripes = grey.clone()
    stripes[..., ::2] = -1.0  # columns alternate: vertical edges
    s = dict(zip(ATTRIBUTES, region_attributes(stripes, mask)[0].tolist(), strict=True))
    assert s["edge_orientation"] > 0.4 and s["contrast"] > 0.2
    t = dict(zip(ATTRIBUTES, region_attributes(stripes.transpose(2, 3), mask)[0].tolist(), strict=True))
    assert t["edge_orientation"] == pytest.approx(-s["edge_orientation"])
