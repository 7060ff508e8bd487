"""Train the ``scenes`` DDPM (the zoo's pixel DDPM on procedural scenes) and ship its fp16 weights.

The data are `make_scenes(N_SCENES, seed=SCENES_SEED)` (seed 0; the benchmark draws its held-out scenes from
other seeds); the model, schedule and training loop are the zoo's (`create_generator("scenes")`, preset
``data/zoo/presets/scenes.json``, `fit`, `save_generator`), one thread, seeded. Checkpoints go to ``--work``
at every log step. Writes ``aigclab/assets/weights/zoo/scenes.safetensors`` and ``scenes.json`` (or ``--out``).

Run: nice -n 10 python scripts/train_scenes_ddpm.py [--steps N] [--out DIR] [--work DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from aigclab.data.scenes import make_scenes
from aigclab.data.zoo import create_generator, fit, round_to_fp16, save_generator, weights_dir

N_SCENES, SCENES_SEED = 16384, 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="override the preset's training steps")
    parser.add_argument("--out", type=Path, default=weights_dir())
    parser.add_argument("--work", type=Path, default=Path("/tmp/scenes-ddpm-work"))
    parser.add_argument("--log-every", type=int, default=250)
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = {} if args.steps is None else {"steps": args.steps}
    model = create_generator("scenes", **overrides)
    scenes = make_scenes(N_SCENES, seed=SCENES_SEED, size=model.config.size)
    print(f"scenes: {N_SCENES} scenes (seed {SCENES_SEED}), {model.config.steps} steps", flush=True)
    fit(
        model,
        scenes.images,
        log=lambda s: print(s, flush=True),
        log_every=args.log_every,
        checkpoint=args.work,
    )
    path = save_generator(round_to_fp16(model), args.out)
    print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
