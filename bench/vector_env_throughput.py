"""Env-steps/s of `SimulatorVectorEnv` (simulator/vector.py) for 1, 8 and 32 environments: each step is one batched
sampler call for all of them (issue 22). The same script runs on a GPU; here, a CPU.

    python bench/vector_env_throughput.py [--checkpoint DIR] [--envs 1 8 32] [--steps 3] [--sampler_steps 2]

Without --checkpoint, a tiny base model is trained for 2 steps on the tabletop sample (bench/simulator_throughput's).
Timed: `--steps` vector steps after one warm-up step (which compiles the sampler for that batch size).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--sampler_steps", type=int, default=2, help="DDIM steps per interaction")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "unisim-bench-vector"))
    args = parser.parse_args()
    import jax

    from simulator_throughput import tiny_checkpoint
    from unisim.simulator.core import SamplerSettings, Simulator
    from unisim.simulator.vector import SimulatorVectorEnv

    checkpoint = args.checkpoint or tiny_checkpoint(args.workdir)
    sim = Simulator.from_checkpoints(checkpoint, sampler=SamplerSettings(steps=args.sampler_steps),
                                     max_batch=max(args.envs))
    height, width = sim.output_size
    images = np.random.default_rng(0).integers(0, 256, (4, height, width, 3), dtype=np.uint8)
    print(f"device: {jax.devices()[0].device_kind} ({jax.devices()[0].platform}); {sim.frames} frames of "
          f"{height}×{width} a step, DDIM {args.sampler_steps} steps, controls-only actions")
    print("| environments | vector steps/s | env-steps/s | × one environment |")
    print("| ---: | ---: | ---: | ---: |")
    base = None
    for n in args.envs:
        envs = SimulatorVectorEnv(sim, images, num_envs=n)
        envs.reset(seed=0)
        actions = {"controls": np.tile(np.array([0.01, -0.02], np.float32), (n, 1))}
        if "text" in envs.single_action_space.spaces:
            actions["text"] = ("",) * n
        envs.step(actions)  # compiles the sampler for this batch size
        began = time.perf_counter()
        for _ in range(args.steps):
            envs.step(actions)
        rate = args.steps / (time.perf_counter() - began)
        base = base or rate * n
        print(f"| {n} | {rate:.2f} | {rate * n:.2f} | {rate * n / base:.2f}× |", flush=True)
        envs.close()


if __name__ == "__main__":
    main()
