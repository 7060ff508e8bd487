"""Embedded data: the real photographs, the generator zoo and the AIGC-Mini benchmark.

Modules (imported on demand, so ``import aigclab.data`` stays light):

- `aigclab.data.photos`: `photo_patches(split, size=32|64, ...)`, real patches split by photo.
- `aigclab.data.zoo`: `create_generator(name)`, `load_generator(name)` (trained, shipped), each with
  `.sample(n, generator=torch.Generator)` -> uint8 (n, 32, 32, 3); the ``generator`` registry.
- `aigclab.data.mini`: `load_mini(split, generators=..., compression=...)` -> `MiniSplit` (images
  (N, 32, 32, 3) uint8, labels, generator names, sample ids); `few_shot_episodes(...)`;
  `mini_protocols()`; `compress(images, "jpeg75")`; `paired_training_views(images)`.
- `aigclab.data.build`: `build_mini(...)`, what ``aigclab data build-mini`` runs.
- `aigclab.data.show`: PNG grids and the Frechet-distance summary (``aigclab data show``).
"""
