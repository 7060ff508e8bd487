"""Explain verdicts: forensic cues, ForenX-style forensic prompting and pluggable (M)LLM backends.

Example:
    >>> from aigclab.explain import compute_cues
    >>> import numpy as np
    >>> sorted(compute_cues(np.zeros((32, 32, 3), np.uint8)))
    ['colour', 'jpeg_grid', 'noise_residual', 'spectral_peaks']
"""

from aigclab.explain.cues import CUES, Cue, attribution_map, compute_cues
from aigclab.explain.explainer import EXPLAINERS, ExplainResult, create_explainer, explain_image, save_heatmap
from aigclab.explain.prompts import forensic_messages
from aigclab.explain.schema import Evidence, Explanation, Verdict

__all__ = [
    "CUES",
    "EXPLAINERS",
    "Cue",
    "Evidence",
    "ExplainResult",
    "Explanation",
    "Verdict",
    "attribution_map",
    "compute_cues",
    "create_explainer",
    "explain_image",
    "forensic_messages",
    "save_heatmap",
]
