"""Train steps/s and MFU of a trainer config's model — by default the paper-shaped base model (Table 6 structure)
at a reduced width — on the fastest device here, with a synthetic batch at the config's input shape (the loader is
measured by bench/loader_throughput.py).

MFU = model FLOPs per step (XLA's cost analysis of the compiled step: forward, backward, optimizer, EMA)
÷ step time ÷ the device's peak. Peak: the datasheet's dense bf16 (or f32) figure for known GPUs; on a CPU, which
has no datasheet figure here, the best rate this process reaches on a large matmul in the same dtype, measured in
the same run (so the CPU MFU says how close the model gets to this machine's own matmul speed).

    python bench/train_step_throughput.py [--channels 128] [--batch 2] [--steps 5] [--bf16]
    python bench/train_step_throughput.py --config trainer/configs/tabletop_cpu.py   # its own width and batch
"""

from __future__ import annotations

import argparse
import time

# Dense peak FLOP/s by device kind (NVIDIA datasheets, SXM parts, without sparsity).
PEAKS = {"H100": {"bf16": 989e12, "f32": 67e12}, "H200": {"bf16": 989e12, "f32": 67e12},
         "A100": {"bf16": 312e12, "f32": 19.5e12}}


def matmul_peak(dtype) -> float:
    import jax
    import jax.numpy as jnp

    n = 2048
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        f(a).block_until_ready()
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="a trainer config .py (default: configs/base.py at --channels)")
    parser.add_argument("--channels", type=int, help="base channels (default: 128 for base.py, else the config's)")
    parser.add_argument("--batch", type=int, help="batch size (default: 2 for base.py, else the config's)")
    parser.add_argument("--text_dim", type=int, default=None, help="T5 width (default 4096; 32 with --config, "
                        "the tiny stand-in's)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args()
    import runpy

    import jax
    import jax.numpy as jnp

    from unisim.trainer import stage, train
    from unisim.trainer.configs import base

    config = (runpy.run_path(args.config)["get_config"] if args.config else base.get_config)()
    config.model.channels = args.channels or (config.model.channels if args.config else 128)
    config.input.batch_size = args.batch or (config.input.batch_size if args.config else 2)
    config.bf16 = args.bf16
    text_dim = args.text_dim or (32 if args.config else 4096)
    device = jax.devices()[0]
    mesh = train.make_mesh(1)
    _, state, abstract, _, step_fn = train.build_training(config, mesh, text_dim=text_dim, control_dims=2)
    params = sum(x.size for x in jax.tree.leaves(abstract.params))
    batch = stage.example_batch(config, text_dim, 2, config.input.batch_size)
    batch["frame_mask"][:] = True  # every target frame counts in the loss, as in a full clip
    batch["history_mask"][:] = True
    rng = jax.random.PRNGKey(0)
    compiled = step_fn.lower(state, batch, rng).compile()
    cost = compiled.cost_analysis()
    flops = float((cost[0] if isinstance(cost, list) else cost)["flops"])
    state, metrics = step_fn(state, batch, rng)  # compile + first step
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(args.steps):
        state, metrics = step_fn(state, batch, rng)
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - start) / args.steps
    dtype = "bf16" if args.bf16 else "f32"
    kind = next((k for k in PEAKS if k in device.device_kind), None)
    if kind:
        peak, peak_source = PEAKS[kind][dtype], f"{kind} datasheet {dtype}"
    else:
        peak, peak_source = matmul_peak(jnp.bfloat16 if args.bf16 else jnp.float32), f"measured {dtype} matmul"
    print(f"device: {device.device_kind} ({device.platform}), {jax.device_count()} device(s)")
    i = config.input
    print(f"model: {args.config or 'Table 6 structure (configs/base.py)'} at {config.model.channels} base channels, "
          f"{params / 1e6:.1f}M parameters; batch {i.batch_size} × {i.frames} frames × {i.height}×{i.width} with "
          f"{i.history_frames} history frames; {dtype} compute")
    print(f"step: {seconds * 1e3:.0f} ms ({1 / seconds:.2f} steps/s, {i.batch_size / seconds:.1f} examples/s), "
          f"{flops / 1e9:.1f} GFLOP per step (XLA cost analysis), {flops / seconds / 1e9:.1f} GFLOP/s")
    print(f"MFU: {100 * flops / seconds / peak:.1f} % of {peak / 1e12:.2f} TFLOP/s ({peak_source})")


if __name__ == "__main__":
    main()
