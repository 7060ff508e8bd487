"""Training-free local edit directions from the masked Jacobian of a diffusion UNet (RBE, AAAI 2025).

After DDIM inversion of an image to x_t0, the UNet's bottleneck h ("h-space", the output of its middle
block) is the latent that is perturbed. The map f(h) = eps(x_t0, t0; h) * M (M: the region mask) has a
Jacobian J = df/dh; its top right singular vectors are the h-space directions that move the masked region
most. They are found by power iteration on J^T J with deflation, each product computed matrix-free with
`torch.func.jvp` (J u) and `torch.func.vjp` (J^T v). Directions are then made to leave the rest of the image
alone in one of two ways:

- ``per-direction`` (as the seed's released code does): direction i loses its component along the i-th top
  direction of the unmasked map f1(h) = eps * (1 - M);
- ``nullspace`` (as in LowRankGAN / LOCO-Edit): every direction is projected onto the orthogonal complement
  of the span of the top ``null_rank`` directions of the unmasked map.

An edit samples back from x_t0 with deterministic DDIM while the bottleneck is shifted, h + strength * u
(u has unit norm), at the chosen steps (Asyrp-style h-space editing with a fixed direction).

Example:
    >>> import torch
    >>> from aigclab.diffusion.models import load_model
    >>> from aigclab.diffusion.jacobian_edit import box_mask, find_directions, invert
    >>> model = load_model("tiny")
    >>> image = torch.zeros(1, 3, 16, 16)
    >>> xt = invert(model, image, t0=40, steps=4)
    >>> dirs = find_directions(model, xt, 40, box_mask(16, 0, 0, 8, 8), k=2, iters=5)
    >>> dirs.u.shape
    torch.Size([2, 16, 8, 8])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch.func import jvp, vjp

from aigclab.diffusion.models import DiffusionModel
from aigclab.errors import AigclabError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "Directions",
    "bottleneck",
    "bottleneck_at",
    "box_mask",
    "edit",
    "find_directions",
    "invert",
    "locality",
    "masked_eps",
    "power_iteration",
    "project_away",
    "read_image",
    "read_mask",
    "region_attributes",
    "sample_from",
    "timestep_grid",
    "to_uint8",
]

Projection = Literal["none", "per-direction", "nullspace"]


@dataclass
class Directions:
    """Unit h-space directions ``u`` (k, C, h, w), their singular values, the norm of h at t0 (the scale that
    strengths are relative to) and the finding cost in seconds."""

    u: torch.Tensor
    sigma: torch.Tensor
    h_norm: float
    seconds: float
    projection: str


# --- the schedule and DDIM inversion / sampling, written out ---------------------------------------------


def timestep_grid(t0: int, steps: int) -> list[int]:
    """``steps + 1`` integer timesteps 0 = s_0 < ... < s_steps = t0 (the inversion path)."""
    if steps < 1 or t0 <= 0:
        raise AigclabError(f"need steps >= 1 and t0 > 0, got steps={steps} t0={t0}")
    return [round(t0 * i / steps) for i in range(steps + 1)]


def _alphas(model: DiffusionModel, ts: list[int]) -> list[float]:
    """alpha-bar at each grid timestep, with alpha-bar(s_0) = 1 (the clean image)."""
    acp = model.scheduler().alphas_cumprod
    if ts[-1] >= len(acp):
        raise AigclabError(f"t0={ts[-1]} is past model {model.name!r}'s {len(acp)} training timesteps")
    return [1.0] + [float(acp[t]) for t in ts[1:]]


def _ddim_move(x: torch.Tensor, eps: torch.Tensor, a_from: float, a_to: float) -> torch.Tensor:
    x0 = (x - (1 - a_from) ** 0.5 * eps) / a_from**0.5
    return a_to**0.5 * x0 + (1 - a_to) ** 0.5 * eps


@torch.no_grad()
def invert(model: DiffusionModel, image: torch.Tensor, t0: int, steps: int) -> torch.Tensor:
    """Deterministic DDIM inversion of images (N, 3, H, W) in [-1, 1] to x_t0 over ``steps`` steps."""
    ts = timestep_grid(t0, steps)
    a = _alphas(model, ts)
    x = image
    for i in range(steps):
        eps = model.unet(x, ts[i]).sample
        x = _ddim_move(x, eps, a[i], a[i + 1])
    return x


@contextmanager
def bottleneck(model: DiffusionModel, replace: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Within the block, the UNet's middle-block output h is replaced by ``replace(h)``."""
    mid = getattr(model.unet, "mid_block", None)
    if mid is None:
        raise AigclabError(f"model {model.name!r}: the UNet has no middle block (h-space)")
    handle = mid.register_forward_hook(lambda _m, _inp, out: replace(out))
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def sample_from(
    model: DiffusionModel,
    xt: torch.Tensor,
    t0: int,
    steps: int,
    shift: torch.Tensor | None = None,
    edit_steps: int | None = None,
) -> torch.Tensor:
    """DDIM from x_t0 back to the image; ``shift`` (broadcast to h) is added to h at the first ``edit_steps``."""
    ts = timestep_grid(t0, steps)
    a = _alphas(model, ts)
    n_edit = steps if edit_steps is None else edit_steps
    x = xt
    for j, i in enumerate(range(steps, 0, -1)):
        if shift is not None and j < n_edit:
            with bottleneck(model, lambda h: h + shift):
                eps = model.unet(x, ts[i]).sample
        else:
            eps = model.unet(x, ts[i]).sample
        x = _ddim_move(x, eps, a[i], a[i - 1])
    return x


# --- Jacobian products and power iteration ---------------------------------------------------------------


def masked_eps(model: DiffusionModel, xt: torch.Tensor, t: int, mask: torch.Tensor) -> Callable:  # type: ignore[type-arg]
    """f(h) = eps(x_t, t; h) * mask for one image ``xt`` (1, 3, H, W): h replaces the middle-block output."""

    def f(h: torch.Tensor) -> torch.Tensor:
        with bottleneck(model, lambda _h: h):
            return model.unet(xt, t).sample * mask

    return f


def bottleneck_at(model: DiffusionModel, xt: torch.Tensor, t: int) -> torch.Tensor:
    """The middle-block output h for one input (1, 3, H, W) at timestep ``t``."""
    seen: list[torch.Tensor] = []

    def keep(h: torch.Tensor) -> torch.Tensor:
        seen.append(h.detach())
        return h

    with torch.no_grad(), bottleneck(model, keep):
        model.unet(xt, t)
    return seen[0]


def power_iteration(
    f: Callable[[torch.Tensor], torch.Tensor],
    h: torch.Tensor,
    k: int,
    generator: torch.Generator,
    iters: int = 50,
    tol: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` right singular vectors (k, *h.shape) and singular values (k, B) of J = df/dh at ``h``.

    The B = ``h.shape[0]`` samples are independent problems (f must map each sample of the batch on its own,
    as a UNet does), solved together in one batched pass: dot products, norms and deflation are per sample.
    Each direction is found by power iteration on J^T J (J u by forward mode, J^T v by reverse mode, the
    reverse pass built once and reused), deflated against the directions found before it; it stops when every
    sample's eigenvalue changes by less than ``tol`` (relative) or after ``iters`` iterations.
    """
    pullback = vjp(f, h)[1]
    found: list[torch.Tensor] = []
    sigmas: list[torch.Tensor] = []
    for _ in range(k):
        u = _deflate(torch.randn(h.shape, generator=generator), found)
        u = u / _norm(u)
        eig = torch.zeros(len(h))
        for _ in range(iters):
            ju = jvp(f, (h,), (u,))[1]
            w = _deflate(pullback(ju)[0], found)
            new_eig = _dot(w, u).flatten().detach()
            u = w / _norm(w).clamp_min(1e-30)
            done = bool(((new_eig - eig).abs() <= tol * new_eig.abs().clamp_min(1e-30)).all())
            eig = new_eig
            if done:
                break
        found.append(u.detach())
        sigmas.append(eig.clamp_min(0.0).sqrt())
    return torch.stack(found), torch.stack(sigmas)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner product, shaped to broadcast against a sample: (B, 1, 1, ...)."""
    return (a * b).flatten(1).sum(1).reshape(-1, *[1] * (a.dim() - 1))


def _norm(a: torch.Tensor) -> torch.Tensor:
    return _dot(a, a).sqrt()


def _deflate(u: torch.Tensor, found: list[torch.Tensor]) -> torch.Tensor:
    for v in found:
        u = u - _dot(u, v) * v
    return u


def project_away(u: torch.Tensor, against: torch.Tensor, how: Projection) -> torch.Tensor:
    """Remove from each direction u[i] what moves the unmasked region; renormalise to unit norm.

    ``per-direction``: u[i] minus its component along against[i] (the seed's code). ``nullspace``: every
    u[i] projected onto the orthogonal complement of span(against) (against: orthonormal rows). ``none``:
    unchanged.
    """
    if how == "none":
        return u
    flat, basis = u.flatten(1), against.flatten(1)
    if how == "per-direction":
        if len(basis) < len(flat):
            raise AigclabError(
                f"per-direction projection needs {len(flat)} unmasked directions, got {len(basis)}"
            )
        b = basis[: len(flat)]
        flat = flat - ((flat * b).sum(1, keepdim=True) / (b * b).sum(1, keepdim=True)) * b
    elif how == "nullspace":
        q, _ = torch.linalg.qr(basis.T)  # orthonormal basis of span(against)
        flat = flat - (flat @ q) @ q.T
    else:
        raise AigclabError(f"unknown projection {how!r}; known: none, per-direction, nullspace")
    return (flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-30)).reshape(u.shape)


def box_mask(size: int, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """A (1, 1, size, size) float mask that is 1 inside the box."""
    m = torch.zeros(1, 1, size, size)
    m[..., top : top + height, left : left + width] = 1.0
    return m


def find_directions(
    model: DiffusionModel,
    xt: torch.Tensor,
    t0: int,
    mask: torch.Tensor,
    k: int = 3,
    projection: Projection = "nullspace",
    null_rank: int | None = None,
    iters: int = 50,
    seed: int = 0,
) -> Directions:
    """Top-``k`` local directions of the masked region of one inverted image ``xt`` (1, 3, H, W).

    ``mask`` (1, 1, H, W) in [0, 1]. For a projection, the top ``null_rank`` (default ``k``; per-direction
    uses ``k``) directions of the unmasked region are found as well and projected away.
    """
    if mask.shape[-2:] != xt.shape[-2:]:
        raise AigclabError(f"mask is {tuple(mask.shape[-2:])}, image is {tuple(xt.shape[-2:])}")
    if null_rank is not None and null_rank < 1:
        raise AigclabError(f"null_rank must be >= 1, got {null_rank}")
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    h = bottleneck_at(model, xt, t0)
    u, sigma = power_iteration(masked_eps(model, xt, t0, mask), h, k, gen, iters)
    if projection != "none":
        r = k if projection == "per-direction" else (null_rank or k)
        u1, _ = power_iteration(masked_eps(model, xt, t0, 1 - mask), h, r, gen, iters)
        u = project_away(u, u1, projection)
    return Directions(u[:, 0], sigma[:, 0], float(h.norm()), time.perf_counter() - start, projection)


def edit(
    model: DiffusionModel,
    xt: torch.Tensor,
    t0: int,
    steps: int,
    direction: torch.Tensor,
    strengths: list[float],
    edit_steps: int | None = None,
) -> torch.Tensor:
    """One image per strength (len(strengths), 3, H, W): x_t0 sampled back with h + strength * direction."""
    out = [sample_from(model, xt, t0, steps, s * direction, edit_steps) for s in strengths]
    return torch.cat(out)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def locality(edited: torch.Tensor, base: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per image: mean squared change inside the mask / mean squared change outside it."""
    change = (edited - base).pow(2).mean(1, keepdim=True)
    inside = (change * mask).sum((1, 2, 3)) / mask.sum()
    outside = (change * (1 - mask)).sum((1, 2, 3)) / (1 - mask).sum()
    return inside / outside.clamp_min(1e-12)


ATTRIBUTES = (
    "brightness", "saturation", "red_green", "blue_yellow", "contrast", "edge_energy", "edge_orientation",
)  # fmt: skip


def region_attributes(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attributes of images (N, 3, H, W) in [-1, 1] inside ``mask`` (1, 1, H, W), one column per `ATTRIBUTES`.

    Defined by construction on pixels in [0, 1]: mean luma, mean HSV saturation, mean R - G and
    B - (R + G) / 2 (the opponent colour axes, so a hue shift shows up in them), luma standard deviation
    (contrast), mean |horizontal| + |vertical| luma difference (edge energy) and their difference
    (edge orientation: > 0 when vertical edges dominate).
    """
    x = (images.clamp(-1, 1) + 1) / 2
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    m = mask[:, 0]

    def mean(a: torch.Tensor, w: torch.Tensor = m) -> torch.Tensor:
        return (a * w).sum((1, 2)) / w.sum().clamp_min(1e-12)

    hi, lo = x.max(1).values, x.min(1).values
    bright = mean(luma)
    contrast = mean((luma - bright[:, None, None]) ** 2).sqrt()
    ex = mean((luma[:, :, 1:] - luma[:, :, :-1]).abs(), m[:, :, 1:] * m[:, :, :-1])
    ey = mean((luma[:, 1:] - luma[:, :-1]).abs(), m[:, 1:] * m[:, :-1])
    cols = [bright, mean((hi - lo) / hi.clamp_min(1e-6)), mean(r - g), mean(b - (r + g) / 2), contrast]
    return torch.stack([*cols, ex + ey, ex - ey], dim=1)


def _open_rgb(path: Path, size: int, resample: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise AigclabError(f"{path}: not a regular file")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((size, size), resample), np.float32)
    except (UnidentifiedImageError, OSError) as err:
        raise AigclabError(f"{path}: not a readable image ({err})") from err


def read_image(path: Path, size: int) -> torch.Tensor:
    """An image file resized to size x size, as (1, 3, size, size) in [-1, 1]."""
    rgb = _open_rgb(path, size, 3)  # bicubic
    return torch.from_numpy(rgb).permute(2, 0, 1)[None] / 127.5 - 1


def read_mask(path: Path, size: int) -> torch.Tensor:
    """A mask image (white = region to edit) resized to size x size, as (1, 1, size, size) in {0, 1}."""
    mask = torch.from_numpy(_open_rgb(path, size, 0).mean(2) > 127.5).float()[None, None]  # nearest
    if mask.sum() == 0 or mask.sum() == mask.numel():
        raise AigclabError(f"{path}: the mask must mark some pixels white and leave some black")
    return mask
