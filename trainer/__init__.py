"""The JAX/Flax trainer (grain mixture loader, video diffusion model, train loop) — the next issues build it.

Import rule: only `unisim.schemas`; never `pipelines/`, `adapters/` or TensorFlow.
"""
