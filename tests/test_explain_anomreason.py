"""AnomReason-Mini, the anomaly reasoner, anomaly models, the CLI applications and LoRA on a tiny VLM."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from aigclab.cli import app
from aigclab.explain.anomaly_models import create_anomaly_model
from aigclab.explain.anomreason_mini import KINDS, SIZE, make_split, paraphrase, render_scene
from aigclab.explain.quadruples import ImageAnomalies, Quadruple, read_quadruples, write_quadruples
from aigclab.explain.reasoner import ReasonerConfig, load_reasoner, reasoner_path, train_reasoner

SCENES = make_split("test", 120)


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_scenes_are_deterministic_and_splits_disjoint():
    a, b = render_scene(7), render_scene(7)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.anomalies == b.anomalies
    train = make_split("train", 5)
    assert all(not np.array_equal(t.image, s.image) for t in train for s in SCENES[:5])
    with pytest.raises(ValueError, match="unknown split"):
        make_split("dev", 1)


def test_every_kind_is_planted_with_consistent_ground_truth():
    quads = [q for s in SCENES for q in s.anomalies]
    assert {q.kind for q in quads} == set(KINDS)
    clean = np.mean([not s.anomalies for s in SCENES])
    assert 0.15 < clean < 0.45
    for s in SCENES:
        assert len({q.kind for q in s.anomalies}) == len(s.anomalies) <= 2
        anomalous = {e["kind"] for e in s.meta["elements"] if e["anomalous"]}
        assert anomalous == {q.kind for q in s.anomalies}
        for q in s.anomalies:
            assert 1 <= q.severity <= 5
            x0, y0, x1, y1 = q.region
            assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
            if q.kind == "impossible_count":
                n = int(re.search(r"has (\d+) hour marks", q.phenomenon).group(1))
                assert n != 12 and q.severity == (2 if abs(n - 12) == 1 else 3 if abs(n - 12) <= 3 else 4)
            if q.kind == "scale_inconsistency":
                assert float(re.search(r"is ([\d.]+) times", q.phenomenon).group(1)) > 1.0


def test_paraphrase_keeps_the_facts_and_changes_the_words():
    s = next(s for s in SCENES if len(s.anomalies) == 2)
    para = paraphrase(s)
    for a, b in zip(s.anomalies, para, strict=True):
        assert (a.kind, a.severity, a.region) == (b.kind, b.severity, b.region)
        assert a.phenomenon != b.phenomenon and a.name != b.name


def test_planted_clock_marks_are_really_drawn():
    """Count the dark mark blobs on the dial ring: 12 on a normal clock, n on an anomalous one."""
    from scipy import ndimage

    found = {}
    for seed in range(400):
        s = render_scene(seed, anomaly_rate=0.0 if seed % 2 else 1.0)
        clock = next((e for e in s.meta["elements"] if e["kind"] == "impossible_count"), None)
        if clock is None:
            continue
        x0, y0, x1, y1 = clock["box"]
        cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
        yy, xx = np.mgrid[: s.image.shape[0], : s.image.shape[1]]
        ring = np.abs(np.hypot(yy - cy, xx - cx) - 10) < 1.6
        dark = (s.image.astype(int).sum(-1) < 200) & ring
        n = ndimage.label(dark)[1]
        q = [q for q in s.anomalies if q.kind == "impossible_count"]
        expected = int(re.search(r"(\d+)", q[0].phenomenon).group(1)) if q else 12
        found[seed] = (n, expected)
        if len(found) == 12:
            break
    close = [abs(n - e) <= 1 for n, e in found.values()]  # the hands may touch one mark
    assert np.mean(close) >= 0.75, found


def test_reasoner_training_lowers_the_loss_and_weights_round_trip(tmp_path):
    logs = []
    cfg = ReasonerConfig(width=4, n_train=48, n_val=16, epochs=3, batch_size=16, min_confidence=0.0)
    model = train_reasoner(cfg, out=tmp_path / "r.safetensors", log=logs.append)
    losses = [float(re.search(r"train loss ([\d.]+)", m).group(1)) for m in logs]
    assert losses[-1] < losses[0]
    loaded = load_reasoner(tmp_path / "r.safetensors")
    images = [s.image for s in SCENES[:4]]
    a, b = model.predict(images), loaded.predict(images)
    assert [[q.kind for q in p] for p in a] == [
        [q.kind for q in p] for p in b
    ]  # fp16 storage keeps the ranking
    assert all(len(p) == len(KINDS) for p in b)  # min_confidence 0 lists every kind
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    (tmp_path / "bad.json").write_text(cfg.model_dump_json())
    with pytest.raises(Exception, match=r"bad\.safetensors: not a safetensors file"):
        load_reasoner(tmp_path / "bad.safetensors")


@pytest.mark.skipif(not reasoner_path().is_file(), reason="shipped reasoner weights not built")
def test_shipped_reasoner_finds_planted_kinds_on_test_scenes():
    preds = load_reasoner().predict([s.image for s in SCENES])
    tp = sum(
        len({q.kind for q in p} & {q.kind for q in s.anomalies}) for p, s in zip(preds, SCENES, strict=True)
    )
    n_pred, n_gt = sum(map(len, preds)), sum(len(s.anomalies) for s in SCENES)
    assert tp / n_gt > 0.5 and tp / n_pred > 0.5
    zero = create_anomaly_model("zero-shot-rule").predict([s.image for s in SCENES])
    assert tp / n_pred > 2 * sum(len(s.anomalies) for s in SCENES) / sum(map(len, zero))


@pytest.mark.skipif(not reasoner_path().is_file(), reason="shipped reasoner weights not built")
def test_cli_mini_explain_with_anomalies_score_and_reasonableness(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["explain", "mini", str(tmp_path / "mini"), "--n", "3"])
    assert r.exit_code == 0, r.output
    gt = read_quadruples(tmp_path / "mini" / "ground_truth.jsonl")
    assert len(gt) == 3 and (tmp_path / "mini" / gt[0].image).is_file()
    img = tmp_path / "mini" / gt[0].image
    out = tmp_path / "expl.jsonl"
    r = runner.invoke(
        app,
        [
            "explain",
            str(img),
            "--anomaly-model",
            "reasoner",
            "--out",
            str(out),
            "--heatmaps",
            str(tmp_path / "h"),
        ],
    )
    assert r.exit_code == 0, r.output
    rec = json.loads(out.read_text().splitlines()[0])
    assert "explanation" in rec and all(Quadruple.model_validate(q) for q in rec["anomalies"])
    # scoring the ground truth against itself gives 1
    write_quadruples(tmp_path / "self.jsonl", gt)
    r = runner.invoke(
        app, ["explain", "score", str(tmp_path / "self.jsonl"), str(tmp_path / "mini" / "ground_truth.jsonl")]
    )
    assert r.exit_code == 0 and "SemAP 1.0000  SemF1 1.0000" in r.output, r.output
    # reasonableness: a clean generator and an anomalous one, plus a corrupt file that is skipped
    for name, rate in (("clean-gen", 0.0), ("odd-gen", 1.0)):
        (tmp_path / "gens" / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(render_scene(50_000 + i, rate).image).save(tmp_path / "gens" / name / f"{i}.png")
    (tmp_path / "gens" / "odd-gen" / "broken.png").write_bytes(b"not a png")
    r = runner.invoke(
        app, ["explain", "reasonableness", str(tmp_path / "gens"), "--out", str(tmp_path / "rep")]
    )
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "rep" / "reasonableness.json").read_text())
    assert rep["generators"]["odd-gen"]["anomaly_rate"] > rep["generators"]["clean-gen"]["anomaly_rate"]
    assert rep["generators"]["odd-gen"]["n_images"] == 6 and "broken.png" in rep["skipped"][0]["file"]
    assert (tmp_path / "rep" / "reasonableness.png").stat().st_size > 1000
    assert "| odd-gen | 6 |" in (tmp_path / "rep" / "reasonableness.md").read_text()


def test_user_errors_are_one_line(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["explain", "export", str(tmp_path / "none.db"), str(tmp_path / "o.jsonl")])
    assert r.exit_code != 0 and "no annotation database" in str(r.exception)
    (tmp_path / "bad.jsonl").write_text('{"image": "a.png", "anomalies": [{"name": "x"}]}\n')
    with pytest.raises(Exception, match=r"bad.jsonl:1: not an anomaly record"):
        read_quadruples(tmp_path / "bad.jsonl")
    with pytest.raises(Exception, match="unknown anomaly-model 'nope'"):
        create_anomaly_model("nope")


def test_lora_finetuning_of_a_tiny_vlm(tmp_path):
    pytest.importorskip("peft")
    from safetensors.torch import load_file
    from tiny_vlm import make_tiny_vlm

    from aigclab.explain.lora_vlm import LoraTrainConfig, finetune_vlm
    from aigclab.llm import create_backend

    base = make_tiny_vlm(tmp_path / "vlm")
    examples = [(s.image, s.anomalies) for s in SCENES[:2]]
    result = finetune_vlm(base, examples, tmp_path / "tuned", LoraTrainConfig(steps=8, lr=2e-2, rank=4))
    assert np.mean(result["losses"][-2:]) < np.mean(result["losses"][:2])
    assert 0 < result["trainable_params"] < result["total_params"] / 4
    before, after = (
        load_file(str(base / "model.safetensors")),
        load_file(str(tmp_path / "tuned" / "model.safetensors")),
    )
    q = next(k for k in before if k.endswith("self_attn.q_proj.weight"))
    e = next(k for k in before if "embed_tokens" in k)
    assert not np.allclose(before[q].numpy(), after[q].numpy())  # merged LoRA update
    np.testing.assert_array_equal(before[e].numpy(), after[e].numpy())  # frozen weights untouched
    assert (tmp_path / "tuned" / "adapter" / "adapter_config.json").is_file()
    text = create_backend("transformers", model_path=str(tmp_path / "tuned"), max_new_tokens=3).complete(
        [{"role": "user", "content": "hi"}]
    )
    assert isinstance(text, str)
    write_quadruples(tmp_path / "d.jsonl", [ImageAnomalies(image="missing.png", anomalies=[])])
    r = CliRunner().invoke(
        app, ["explain", "finetune-vlm", str(base), "--data", str(tmp_path / "d.jsonl"), "--steps", "1"]
    )
    assert r.exit_code != 0 and "missing.png" in _flat(str(r.exception))
