"""Table 6's three stages compiled for TPU slices on this CPU machine (`unisim train --compile_only`, issue 31): per
stage and slice, the first sharding that fits the chip's memory, its memory, FLOPs and projected step time, and the
accelerator-hours of Table 6's schedule (1,000,000 steps) at that time.

    make install-tpu
    python bench/compile_targets.py --output bench/compile_targets.json [--stages base,sr1,sr2]
        [--topologies v3-1024,v5e-256,v5p-128] [--steps 1000000]

For each stage and slice it tries, in order, until one fits: FSDP groups of `--fsdp` (default 8, 16, 32, …, up to
the slice's devices), first without rematerialisation and then with it. Every attempt is one `unisim train
--compile_only` process (libtpu compiles for the slice; no TPU here); each report goes to the JSON, fitting or not,
with its compile time. Global batch: Table 6's 256; a slice whose JAX devices do not divide it is reported as such
(the trainer splits the batch over every device) and skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def compile_once(stage: str, topology: str, fsdp: int, remat: bool, utilization: float, batch: int,
                 peak_tflops: float | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        command = [sys.executable, "-m", "unisim.cli", "train", "--config", f"trainer/configs/{stage}.py",
                   "--compile_only", "--topology", topology, "--utilization", str(utilization), "--report", report,
                   "--config.bf16=True", f"--config.fsdp={fsdp}", f"--config.model.remat={remat}",
                   f"--config.input.batch_size={batch}",
                   *(["--peak_tflops", str(peak_tflops), "--hbm_gib", "24"] if peak_tflops else [])]  # 24: this machine
        env = dict(os.environ)
        if topology.startswith("cpu-"):  # a smoke run: that many CPU devices in the child
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={topology[4:]}"
        began = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
        seconds = time.monotonic() - began
        if result.returncode != 0 or not os.path.exists(report):
            last = [line for line in result.stderr.splitlines() if line.strip()][-1:] or ["(no output)"]
            error = (f"killed by signal {-result.returncode} after {seconds:.0f} s (out of memory, or stopped)"
                     if result.returncode < 0 else last[0])
            return {"stage": stage, "topology": topology, "fsdp": fsdp, "remat": remat, "error": error,
                    "wall_seconds": seconds}
        with open(report, encoding="utf-8") as f:
            return {"stage": stage, "topology": topology, "fsdp": fsdp, "remat": remat, "wall_seconds": seconds,
                    **json.load(f)}


def attempts(devices: int, fsdp_sizes: list[int]):
    for fsdp in fsdp_sizes:
        if fsdp <= devices and devices % fsdp == 0:
            yield fsdp, False
            yield fsdp, True


def row_line(r: dict, steps: int) -> str:
    gib = 1024**3
    if "error" in r:
        return f"| {r['stage']} | {r['topology']} | {r['fsdp']} | {'on' if r['remat'] else 'off'} | {r['error']} |"
    hours = r["step_seconds"] * steps / 3600
    from unisim.trainer import aot

    target = aot.target(r["topology"])
    chips = target.chips
    return (f"| {r['stage']} | {r['topology']} | {r['fsdp']} | {'on' if r['remat'] else 'off'} | "
            f"{r['peak_bytes'] / gib:.1f} / {r['hbm_bytes'] / gib:.0f} GiB ({'fits' if r['fits'] else 'does not fit'})"
            f" | {r['flops']:.2e} | {r['step_seconds']:.2f} s | {r['mfu']:.0%} | {hours:,.0f} h × "
            f"{chips} chips = {hours * chips:,.0f} chip-h | {r['compile_seconds']:.0f} s |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True)
    parser.add_argument("--stages", default="base,sr1,sr2")
    parser.add_argument("--topologies", default="v3-1024,v3-512,v5e-256,v5p-128")
    parser.add_argument("--fsdp", default="8,16,32,64,128,256")
    parser.add_argument("--steps", type=int, default=1_000_000, help="Table 6's training steps")
    parser.add_argument("--utilization", type=float, default=0.4)
    parser.add_argument("--batch", type=int, default=256, help="the global batch (Table 6's: 256)")
    parser.add_argument("--peak_tflops", type=float, default=None, help="cpu-N smoke runs: a peak to project at")
    args = parser.parse_args()
    from unisim.trainer import aot

    key = lambda r: (r["stage"], r["topology"], r["fsdp"], r["remat"])  # noqa: E731
    rows = {key(r): r for r in (json.load(open(args.output)) if os.path.exists(args.output) else [])}
    for stage in args.stages.split(","):
        for topology in args.topologies.split(","):
            devices = aot.target(topology).devices
            if args.batch % devices:
                row = {"stage": stage, "topology": topology, "fsdp": 0, "remat": False,
                       "error": f"the batch {args.batch} does not split over {devices} devices"}
                rows[key(row)] = row
                continue
            for fsdp, remat in attempts(devices, [int(f) for f in args.fsdp.split(",")]):
                row = rows.get((stage, topology, fsdp, remat))  # kept from an earlier run of the same output
                if row is None:
                    row = compile_once(stage, topology, fsdp, remat, args.utilization, args.batch, args.peak_tflops)
                    rows[key(row)] = row
                    with open(args.output, "w", encoding="utf-8") as f:
                        json.dump(list(rows.values()), f, indent=1)
                print(row_line(row, args.steps), flush=True)
                if row.get("fits"):
                    break
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(list(rows.values()), f, indent=1)
    print("| stage | slice | FSDP | remat | peak memory per device | FLOPs per device | step | MFU | Table 6's "
          "1M steps | compile |")
    for row in rows.values():
        print(row_line(row, args.steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
