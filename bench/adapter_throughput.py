"""Adapter throughput on the test fixtures: episodes/s read by each adapter alone, and through `convert`.

The fixtures are the tests' own (official layouts, planted bad items included), written once into --workdir.
"read" runs `work_units()` + `read()` --repeat times and touches every frame's bytes (so lazily read files are
read); "convert" is the whole pipeline in-process on one local worker (FnApiRunner: pipeline start, decode,
resize, encode, statistics, shards, manifest), once. Fixtures are a handful of episodes, so the convert figure
is dominated by the pipeline's fixed cost; the read figure is the adapter's own rate, and "opening %" is the
share of it spent before each work unit's first item (for RLDS: TFDS opening a file), which real releases, with
thousands of episodes per file, amortise.

    python bench/adapter_throughput.py [--repeat 20] [--workdir /tmp/unisim-bench-adapters]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def fixtures(workdir: str) -> dict[str, tuple[str, str, dict]]:
    """name → (dataset, source, options); written on first use."""
    from unisim.samples.fixtures import language_table as lt_fixtures
    from unisim.samples.fixtures import robots as rf
    from unisim.samples.fixtures import images as imf
    from unisim.samples.fixtures import episode_folders as ef

    def once(name, write):
        path = os.path.join(workdir, name)
        marker = os.path.join(path, ".done")
        if not os.path.exists(marker):
            shutil.rmtree(path, ignore_errors=True)
            os.makedirs(path)
            with open(marker + ".source", "w") as f:
                f.write(write(path))
            open(marker, "w").close()
        return open(marker + ".source").read()

    return {
        "language_table": ("language_table", once("language_table", lt_fixtures.write_language_table), {}),
        "rt1": ("rt1", once("rt1", rf.write_rt1), {}),
        "bridge (raw)": ("bridge", once("bridge_raw", lambda p: rf.write_bridge_raw(f"{p}/root", p)), {}),
        "bridge (rlds)": ("bridge", once("bridge_rlds", rf.write_bridge_rlds), {}),
        "rlds (toy OXE)": ("rlds", once("toy_oxe", rf.write_toy_oxe),
                           {"fps": 10, "episode_id": "episode_metadata/episode_id"}),
        "episode_folders": ("episode_folders", once("episode_folders", ef.write_fixture), ef.OPTIONS),
        "laion (tar)": ("laion", once("laion_tar", imf.write_img2dataset), {}),
        "laion (parquet)": ("laion", once("laion_parquet", imf.write_coyo_files), {}),
    }


def read_rate(dataset: str, source: str, options: dict, repeat: int) -> tuple[int, int, float, float]:
    """(episodes, frames, seconds, seconds spent before each unit's first item: opening files, TFDS set-up)."""
    from unisim.adapters import registry
    from unisim.adapters.base import Episode

    adapter = registry.create(dataset, source, None, options)
    units = adapter.work_units()
    episodes = frames = 0
    opening = 0.0
    start = time.perf_counter()
    for _ in range(repeat):
        for unit in units:
            unit_start = time.perf_counter()
            for position, item in enumerate(adapter.read(unit)):
                if position == 0:
                    opening += time.perf_counter() - unit_start
                if isinstance(item, Episode):
                    episodes += 1
                    frames += sum(1 for f in item.frames if len(f) >= 0)  # touches (reads) every frame
    return episodes, frames, time.perf_counter() - start, opening


def convert_rate(dataset: str, source: str, options: dict, output: str) -> tuple[int, float]:
    from unisim.pipelines import convert

    shutil.rmtree(output, ignore_errors=True)
    start = time.perf_counter()
    manifest, _ = convert.run(convert.ConvertConfig(dataset=dataset, source=source, output=output,
                                                    adapter_options=options), command="bench")
    return manifest.source_episodes, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20, help="passes over each fixture for the read rate")
    parser.add_argument("--workdir", default="/tmp/unisim-bench-adapters")
    args = parser.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores; read = adapter alone x{args.repeat}, convert = whole pipeline once")
    print(f"{'adapter':18s} {'episodes':>8s} {'read ep/s':>10s} {'read fr/s':>10s} {'opening %':>10s} "
          f"{'convert ep/s':>13s} {'convert s':>10s}")
    for label, (dataset, source, options) in fixtures(args.workdir).items():
        episodes, frames, seconds, opening = read_rate(dataset, source, options, args.repeat)
        converted, convert_seconds = convert_rate(dataset, source, options,
                                                  os.path.join(args.workdir, "out", label.split()[0]))
        print(f"{label:18s} {converted:8d} {episodes / seconds:10.1f} {frames / seconds:10.0f} "
              f"{100 * opening / seconds:10.0f} "
              f"{converted / convert_seconds:13.2f} {convert_seconds:10.1f}")


if __name__ == "__main__":
    main()
