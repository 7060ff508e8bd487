"""Procedural scenes: seeded generation, the parser against the generator's ground truth, the scenes DDPM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aigclab.data.scenes import (
    SHAPES,
    SceneObject,
    classify_shape,
    make_scenes,
    parse_region,
    parse_regions,
    region_mask,
    render,
    scene_statistics,
)
from aigclab.errors import AigclabError

IDEAL_AREA = {"disk": np.pi, "square": 4.0, "triangle": 2.0}  # times size**2
CENTROID_DROP = {"disk": 0.0, "square": 0.0, "triangle": 1 / 3}  # times size: a triangle's centroid is low


@pytest.fixture(scope="module")
def scenes():  # type: ignore[no-untyped-def]
    return make_scenes(300, seed=7)


def test_scenes_are_seeded_and_objects_stay_in_their_quadrant(scenes) -> None:  # type: ignore[no-untyped-def]
    again = make_scenes(300, seed=7)
    np.testing.assert_array_equal(scenes.images, again.images)
    assert not np.array_equal(make_scenes(5, seed=8).images, scenes.images[:5])
    counts = [len(objs) for objs in scenes.objects]
    assert min(counts) == 1 and max(counts) == 3
    for objs in scenes.objects:
        assert len({o.region for o in objs}) == len(objs)
        for o in objs:
            top, left = (o.region // 2) * 16, (o.region % 2) * 16
            assert top <= o.row - o.size and o.row + o.size <= top + 16
            assert left <= o.col - o.size and o.col + o.size <= left + 16
    shapes = [o.shape for objs in scenes.objects for o in objs]
    assert set(shapes) == set(SHAPES)


def test_parser_reads_back_the_ground_truth(scenes) -> None:  # type: ignore[no-untyped-def]
    colour_err, area_rel, centre_err, right_shape = [], [], [], []
    for image, objs in zip(scenes.images, scenes.objects, strict=True):
        for o in objs:
            p = parse_region(image, region_mask(32, o.region))
            assert p.present
            colour_err.append(np.abs(np.array(p.colour) - o.colour).max())
            area_rel.append(p.area / (IDEAL_AREA[o.shape] * o.size**2) - 1)
            drop = CENTROID_DROP[o.shape] * o.size
            centre_err.append(max(abs(p.row - o.row - drop), abs(p.col - o.col)))
            right_shape.append(classify_shape(p.fill) == o.shape)
    assert np.median(colour_err) < 0.02 and np.quantile(colour_err, 0.95) < 0.08
    assert abs(np.median(area_rel)) < 0.1 and np.quantile(np.abs(area_rel), 0.9) < 0.3
    assert np.median(centre_err) < 0.2 and max(centre_err) < 0.8
    assert np.mean(right_shape) > 0.9


def test_parser_finds_nothing_in_empty_quadrants(scenes) -> None:  # type: ignore[no-untyped-def]
    for image, objs in zip(scenes.images[:100], scenes.objects[:100], strict=True):
        for r in set(range(4)) - {o.region for o in objs}:
            p = parse_region(image, region_mask(32, r))
            assert not p.present and np.isnan(p.vector()).all()


def test_parser_sees_one_attribute_change_at_a_time() -> None:
    base = SceneObject(0, "disk", (0.9, 0.2, 0.1), 0.02, 4.0, 8.0, 8.0)
    other = SceneObject(3, "square", (0.1, 0.3, 0.9), 0.63, 5.0, 24.0, 24.0)
    variants = {
        "colour": SceneObject(0, "disk", (0.1, 0.8, 0.2), 0.36, 4.0, 8.0, 8.0),
        "size": SceneObject(0, "disk", (0.9, 0.2, 0.1), 0.02, 5.5, 8.0, 8.0),
        "shape": SceneObject(0, "square", (0.9, 0.2, 0.1), 0.02, 4.0, 8.0, 8.0),
        "position": SceneObject(0, "disk", (0.9, 0.2, 0.1), 0.02, 4.0, 9.5, 6.5),
    }
    mask = region_mask(32, 0)
    before = parse_region(render([base, other], 0.35), mask).vector()
    for name, obj in variants.items():
        change = np.abs(parse_region(render([obj, other], 0.35), mask).vector() - before)
        colour, area, fill, pos = change[:3].max(), change[4], change[5], change[6:].max()
        assert (colour > 0.3) == (name == "colour"), name
        assert (area > 8) == (name in ("size", "shape")), name
        assert (fill > 0.1) == (name == "shape"), name
        assert (pos > 1.0) == (name == "position"), name
    # the other quadrant's object is read as itself, not mixed with the first
    assert parse_region(render([base, other], 0.35), region_mask(32, 3)).colour[2] > 0.8


def test_parser_errors_and_batches(scenes) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AigclabError, match="mask must cover"):
        parse_region(scenes.images[0], np.ones((32, 32), bool))
    with pytest.raises(AigclabError, match="need image"):
        parse_region(scenes.images[0, :, :, 0], region_mask(32, 0))
    with pytest.raises(AigclabError, match="region must be"):
        region_mask(32, 4)
    rows = parse_regions(scenes.images[:10], region_mask(32, 1))
    assert rows.shape == (10, 8)
    stats = scene_statistics(scenes.images[:100])
    assert stats["clean_share"] > 0.95 and 1.5 < stats["objects_per_image"] < 2.5


def test_scenes_model_loads_by_name_and_draws_scenes() -> None:
    from aigclab.diffusion.models import ddim_sample, load_model

    torch.set_num_threads(1)
    model = load_model("scenes")
    assert model.shape == (3, 32, 32)
    images = ddim_sample(model, 16, steps=10, generator=torch.Generator().manual_seed(0))
    assert images.shape == (16, 32, 32, 3)
    stats = scene_statistics(images)  # the data: ~2 objects per image, >90% clean (see the benchmark)
    assert 1.0 <= stats["objects_per_image"] <= 3.0, stats
    assert stats["clean_share"] >= 0.8, stats
    assert sum(stats[f"share_{s}"] > 0.1 for s in SHAPES) >= 2, stats


def test_cli_edits_an_object_of_a_scene_with_the_scenes_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image
    from typer.testing import CliRunner

    from aigclab.diffusion.cli import app

    torch.set_num_threads(1)
    scenes = make_scenes(1, seed=123)
    region = scenes.objects[0][0].region
    Image.fromarray(scenes.images[0]).save(tmp_path / "scene.png")
    Image.fromarray(region_mask(32, region).astype(np.uint8) * 255).save(tmp_path / "mask.png")
    args = ["--mask", str(tmp_path / "mask.png"), "--model", "scenes", "--steps", "4", "--iters", "3"]
    out = tmp_path / "strip.png"
    res = CliRunner().invoke(app, ["edit", str(tmp_path / "scene.png"), *args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "locality" in res.output
    strip = np.asarray(Image.open(out).convert("RGB"))[::4, ::4]  # undo the 4x upscale
    assert strip.shape == (36, 6 * 34 + 2, 3)  # input, then strengths -s, -s/2, 0, s/2, s
    cells = [strip[2:34, 2 + 34 * i : 34 + 34 * i] for i in range(6)]
    np.testing.assert_array_equal(cells[0], scenes.images[0])
    assert parse_region(cells[3], region_mask(32, region)).present  # the unedited reconstruction keeps it
