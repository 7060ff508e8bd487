"""Explain: cues on constructed images, attribution, strengths, the cue explainer and the openai backend."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aigclab.degradations import gaussian_blur, jpeg
from aigclab.explain import Explanation, attribution_map, compute_cues, create_explainer, explain_image
from aigclab.explain.cues import colour, jpeg_grid, noise_residual, spectral_peaks
from aigclab.explain.prompts import forensic_messages, load_template
from aigclab.explain.reference import strength

RNG = np.random.default_rng(0)


def _smooth(n: int = 64) -> np.ndarray:
    """A natural-looking smooth field: low-pass noise, no periodic structure."""
    from scipy import ndimage

    x = ndimage.gaussian_filter(RNG.normal(128, 60, (n, n, 3)), (3, 3, 0)) + RNG.normal(0, 3, (n, n, 3))
    return np.clip(x, 0, 255).astype(np.uint8)


def _upsampled(n: int = 64) -> np.ndarray:
    """A smooth field with the faint 2-pixel checkerboard that transposed convolutions leave."""
    i, j = np.mgrid[:n, :n]
    board = 6.0 * (-1.0) ** (i + j)
    return np.clip(_smooth(n).astype(np.float64) + board[..., None], 0, 255).astype(np.uint8)


def test_spectral_peak_finds_upsampling_at_half_nyquist() -> None:
    up, smooth = spectral_peaks(_upsampled()), spectral_peaks(_smooth())
    assert up.score > smooth.score + 0.5
    assert up.values["fx"] == pytest.approx(0.5, abs=0.04) and up.values["fy"] == pytest.approx(0.5, abs=0.04)
    assert "up-sampling" in up.finding and "up-sampling" not in spectral_peaks(_smooth()).finding


def test_jpeg_ghost_points_at_the_previous_quality() -> None:
    noise = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert jpeg_grid(noise).values["ghost_dip"] < 0.05
    cue = jpeg_grid(jpeg(noise, 70))
    assert cue.values["ghost_dip"] > 0.05 and cue.values["ghost_quality"] == 70 and "ghost" in cue.finding


def test_noise_and_colour_cues_move_the_right_way() -> None:
    img = _smooth()
    assert noise_residual(gaussian_blur(img, 2.0)).score < noise_residual(img).score
    grey = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8)
    assert colour(grey).score < 1e-6 < colour(img).score


def test_attribution_map_locates_what_the_scorer_looks_at() -> None:
    img = _smooth(32)

    def top_left_brightness(batch: np.ndarray) -> np.ndarray:
        return batch[:, :16, :16].mean(axis=(1, 2, 3)) / 255.0

    img[:16, :16] = 250  # bright top-left: occluding it lowers the score
    heat = attribution_map(img, top_left_brightness, 32)
    assert heat.shape == (32, 32) and heat[:12, :12].mean() > 3 * heat[20:, 20:].mean()
    big = np.zeros((96, 128, 3), np.uint8)
    big[:32, :32] = 255
    assert np.unravel_index(attribution_map(big, top_left_brightness, 32).argmax(), (96, 128)) < (32, 32)


REFERENCE = {
    "cues": {
        "spectral_peaks": {"real_quantiles": np.linspace(0.5, 2.5, 101).tolist()},
        "noise_residual": {"real_quantiles": np.linspace(1.0, 4.0, 101).tolist()},
        "jpeg_grid": {"real_quantiles": np.linspace(0.0, 0.5, 101).tolist()},
        "colour": {"real_quantiles": np.linspace(0.0, 80.0, 101).tolist()},
    }
}


def test_strength_is_two_sided_against_real_quantiles() -> None:
    assert strength("spectral_peaks", 1.5, REFERENCE) == pytest.approx(0.0)  # the real median
    assert strength("spectral_peaks", 2.0, REFERENCE) == pytest.approx(0.5)  # the 75th percentile
    assert strength("spectral_peaks", 1.0, REFERENCE) == pytest.approx(0.5)  # the 25th percentile
    assert strength("spectral_peaks", 9.0, REFERENCE) == 1.0
    assert strength("noise_residual", 0.0, REFERENCE) == 1.0  # below every real patch


class _Brightness:
    """A stand-in detector: P(fake) = mean brightness (scores patches like a real detector)."""

    patch_size = 32

    def score(self, images) -> np.ndarray:
        return np.array([np.asarray(im).mean() / 255.0 for im in images])


def test_cue_explainer_is_grounded_and_labelled() -> None:
    res = explain_image(_upsampled(64), _Brightness(), create_explainer("cues"), reference=REFERENCE)
    e = res.explanation
    assert isinstance(e, Explanation) and e.verdict.probability == pytest.approx(
        res.detector_probability, abs=1e-4
    )
    assert e.evidence[0].attribute == "detector attribution" and e.evidence[0].region is not None
    assert {ev.attribute for ev in e.evidence} >= {"texture and high-frequency detail", "colour"}
    assert "No language model was used" in e.summary
    record = res.to_record()
    assert (
        json.loads(json.dumps(record))["cues"]["spectral_peaks"]["strength"]
        == res.strengths["spectral_peaks"]
    )


class _Calibrated(_Brightness):
    """The stand-in with a calibrated threshold and uncertain band, as saved detectors have."""

    def verdicts(self, probs) -> list[str]:
        return ["uncertain" if abs(p - 0.9) < 0.05 else "fake" if p >= 0.9 else "real" for p in probs]


@pytest.mark.parametrize(("level", "label"), [(200, "real"), (230, "uncertain"), (250, "fake")])
def test_cue_explainer_gives_the_detectors_own_verdict(level: int, label: str) -> None:
    image = np.full((64, 64, 3), level, np.uint8)
    res = explain_image(image, _Calibrated(), create_explainer("cues"), reference=REFERENCE)
    assert res.explanation.verdict.label == label and f"judged {label}" in res.explanation.summary


def test_forensic_prompt_covers_the_attribute_families_and_hints() -> None:
    img = _smooth(32)
    msgs = forensic_messages(img, compute_cues(img), detector_probability=0.8)
    text = msgs[1]["content"][0]["text"]
    for attr in load_template()["attributes"]:
        assert attr["name"] in text
    assert "spectral_peaks" in text and "0.80" in text
    assert msgs[1]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_openai_explainer_returns_the_validated_schema(chat_server) -> None:
    reply = {
        "verdict": {"label": "fake", "probability": 0.9},
        "evidence": [
            {"attribute": "anatomy", "finding": "six fingers", "region": [1, 2, 10, 12], "strength": 0.8}
        ],
        "summary": "The hand has six fingers.",
    }
    chat_server.set_script("Sure! " + json.dumps(reply)[:40], "```json\n" + json.dumps(reply) + "\n```")
    explainer = create_explainer(
        "openai", base_url=chat_server.base_url, model="m", max_retries=0, max_reasks=1
    )
    res = explain_image(_smooth(32), _Brightness(), explainer, reference=REFERENCE)
    assert res.explanation.evidence[0].finding == "six fingers" and res.backend == "openai"
    first = chat_server.requests[0]
    assert first["response_format"]["json_schema"]["name"] == "Explanation"
    assert any(p.get("type") == "image_url" for p in first["messages"][1]["content"])
    assert len(chat_server.requests) == 2  # the malformed first reply was re-asked once
