"""The simulator's speed: one interaction step's latency, env steps/s through the batching server for 1, 8 and 32
concurrent environments, and the paper's 256-step ancestral sampler against the few-step DDIM sampler.

    python bench/simulator_throughput.py [--checkpoint DIR] [--envs 1 8 32] [--server_steps 2] [--rounds 2]

Without --checkpoint it first makes a tiny base model (the tabletop sample → convert → `unisim train` with
trainer/configs/tiny.py for 2 steps) under --workdir: speed does not depend on how well a model is trained.
Every figure is wall time after a warm-up call that compiles the sampler for that batch size.

- latency: `Simulator.step` (batch 1, guidance η = 1, so each denoising step evaluates the doubled batch);
- server: N threads, each a `SimulatorGymEnv` over `RemoteSimulator` → `unisim serve`'s server in this process,
  each stepping --rounds times; env steps/s = N · rounds / wall time; batches = the server's sampler calls;
- samplers: one step with `--ancestral_steps` (256) ancestral steps against one with `--ddim_steps` (16) DDIM.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_checkpoint(workdir: str) -> str:
    """A tiny base model trained for 2 steps on the tabletop sample (tiny random T5 for text)."""
    run = os.path.join(workdir, "base")
    if os.path.exists(os.path.join(run, "checkpoints", "2")):
        return run
    cli = [sys.executable, "-m", "unisim.cli"]
    source, clips, t5 = (os.path.join(workdir, name) for name in ("source", "clips", "t5"))
    builder = subprocess.run(cli + ["sample", "tabletop", "--output", source, "--episodes", "4"], check=True, cwd=ROOT,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]  # prints the builder dir
    subprocess.run(cli + ["sample", "tiny_t5", "--output", t5], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    subprocess.run(cli + ["convert", "--dataset", "language_table", "--source", builder, "--output", clips,
                          "--text_encoder", t5], check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    subprocess.run(cli + ["train", "--config", "trainer/configs/tiny.py", "--workdir", run, "--mixture", f"{clips}:1",
                          "--steps", "2", "--config.sample_every=0"], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return run


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def image(seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((192, 320, 3)) * 255).astype(np.uint8)


def step_latency(checkpoint: str, sampler, repeats: int) -> list[float]:
    from unisim.simulator.core import Simulator

    simulator = Simulator.from_checkpoints(checkpoint, sampler=sampler, max_batch=1)
    simulator.reset(image(0), seed=0)
    simulator.step(controls=[0.01, 0.0])  # compiles
    return timed(lambda: simulator.step(controls=[0.01, 0.0]), repeats)


def server_throughput(checkpoint: str, sampler, envs: list[int], rounds: int) -> list[dict]:
    from unisim.simulator.core import Simulator
    from unisim.simulator.envs import SimulatorGymEnv
    from unisim.simulator.serving.client import RemoteSimulator
    from unisim.simulator.serving.http import serve

    simulator = Simulator.from_checkpoints(checkpoint, sampler=sampler, max_batch=max(envs))
    server = serve(simulator, port=0, batch_window_s=0.02)
    rows = []
    try:
        for n in envs:
            remote = RemoteSimulator(server.url)
            environments = [SimulatorGymEnv(remote, [image(i)]) for i in range(n)]
            for i, env in enumerate(environments):
                env.reset(seed=i)
            action = {"controls": np.array([0.01, 0.0], np.float32)}

            def run_round(count):
                threads = [threading.Thread(target=lambda e=e: [e.step(action) for _ in range(count)])
                           for e in environments]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()

            run_round(1)  # compiles the sampler for this batch size
            before = server.stats()
            start = time.perf_counter()
            run_round(rounds)
            wall = time.perf_counter() - start
            after = server.stats()
            batches = after["batches"] - before["batches"]
            rows.append({"envs": n, "env_steps": n * rounds, "seconds": wall, "env_steps_per_s": n * rounds / wall,
                         "sampler_calls": batches, "mean_batch": n * rounds / max(batches, 1)})
            print(f"[bench] {n:3d} envs: {n * rounds} env steps in {wall:.1f} s = {n * rounds / wall:.2f} steps/s, "
                  f"{batches} sampler calls", flush=True)
            for env in environments:
                env.close()
            remote.close()
    finally:
        server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a base model's training workdir (default: make a tiny one)")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "unisim-bench-simulator"))
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=2, help="steps per environment in the server measurement")
    parser.add_argument("--server_steps", type=int, default=2, help="DDIM steps per interaction in the server run")
    parser.add_argument("--ddim_steps", type=int, default=16)
    parser.add_argument("--ancestral_steps", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="timed latency steps")
    parser.add_argument("--skip", nargs="*", default=[], choices=["latency", "server", "samplers"])
    args = parser.parse_args()

    import jax

    from unisim.simulator.core import SamplerSettings

    checkpoint = args.checkpoint or tiny_checkpoint(args.workdir)
    device = jax.devices()[0]
    print(f"[bench] {checkpoint} on {device.platform} ({device.device_kind}), {os.cpu_count()} CPUs", flush=True)
    result = {"device": f"{device.platform} {device.device_kind}", "cpus": os.cpu_count(), "checkpoint": checkpoint}
    if "latency" not in args.skip or "samplers" not in args.skip:
        ddim = step_latency(checkpoint, SamplerSettings(steps=args.ddim_steps), args.repeats)
        result["step_latency_ddim"] = {"steps": args.ddim_steps, "seconds": ddim, "median": statistics.median(ddim)}
        print(f"[bench] one interaction step, DDIM {args.ddim_steps} steps, batch 1: median "
              f"{statistics.median(ddim):.2f} s of {[round(t, 2) for t in ddim]}", flush=True)
    if "samplers" not in args.skip:
        ancestral = step_latency(checkpoint, SamplerSettings(sampler="ancestral", steps=args.ancestral_steps), 1)
        ratio = ancestral[0] / statistics.median(ddim)
        result["step_latency_ancestral"] = {"steps": args.ancestral_steps, "seconds": ancestral, "ratio": ratio}
        print(f"[bench] one interaction step, ancestral {args.ancestral_steps} steps: {ancestral[0]:.1f} s = "
              f"{ratio:.1f}× the DDIM {args.ddim_steps}-step sampler", flush=True)
    if "server" not in args.skip:
        rows = server_throughput(checkpoint, SamplerSettings(steps=args.server_steps), args.envs, args.rounds)
        single = next((r for r in rows if r["envs"] == 1), rows[0])
        for row in rows:
            row["speedup_over_1"] = row["env_steps_per_s"] / single["env_steps_per_s"]
        result["server"] = {"ddim_steps": args.server_steps, "rows": rows}
        print("[bench] | envs | env steps/s | sampler calls | speed-up over 1 env |")
        for row in rows:
            print(f"[bench] | {row['envs']} | {row['env_steps_per_s']:.2f} | {row['sampler_calls']} for "
                  f"{row['env_steps']} steps | {row['speedup_over_1']:.2f}× |")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
