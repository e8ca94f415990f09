"""The adapter conformance kit: one harness every adapter runs against its fixture (see adapters/README.md).

    from unisim.pipelines.conformance import Expectation, check_adapter
    report = check_adapter(Expectation(dataset="my_dataset", source=fixture_dir, episodes=5,
                                       read_rejections={}, records=7, rejected_reasons={"undecodable_image": 1}),
                           scratch_dir)

It checks, and raises `ConformanceError` naming the first broken rule:
  1. discovery is deterministic: two adapter instances list the same work units, in the same order;
  2. reading is deterministic: two reads of every unit yield the same episode ids and rejection keys, in order;
  3. keys are unique: no episode id twice, across all units;
  4. every item is an `Episode` or a `Rejection` with a reason and a detail;
  5. episodes are well formed: one control row per frame, D = len(control_names), float controls,
     a positive fps (unless a single-image episode), a split, the source file, a span (if any) inside the frames;
  6. the adapter's counts match the expectation (episodes, rejections by reason);
  7. the real convert pipeline writes records that all decode and validate, and every episode is accounted
     for: written (some clip of it), or rejected with a reason; the manifest's counts match the expectation.
Nothing here is a mock: the adapter reads its fixture in the official layout, and step 7 runs the Beam pipeline.
"""

from __future__ import annotations

import collections
import dataclasses
import os

import numpy as np

from unisim.adapters import registry
from unisim.adapters.base import Episode
from unisim.schemas.dead_letter import Rejection


class ConformanceError(AssertionError):
    """An adapter broke one of the kit's rules; the message names the rule and the item."""


@dataclasses.dataclass(frozen=True)
class Expectation:
    dataset: str  # the registry name (`--dataset`)
    source: str  # the fixture, in the dataset's official layout
    episodes: int  # episodes the adapter yields
    read_rejections: dict[str, int]  # rejections the adapter itself yields, by reason
    records: int  # records the pipeline writes
    rejected_reasons: dict[str, int]  # everything the pipeline rejects (adapter's included), by reason
    split: str | None = None
    options: dict = dataclasses.field(default_factory=dict)  # the adapter's options (`--adapter_option`)
    altered: dict[str, int] = dataclasses.field(default_factory=dict)  # episodes kept with a change, by what


@dataclasses.dataclass
class Report:
    units: list[str]
    episodes: list[Episode]
    rejections: list[Rejection]
    manifest: object
    counters: dict[str, int]
    output: str  # the directory the pipeline wrote
    dead_letter: list[Rejection]  # what the pipeline rejected, as written to its dead letter


def _require(ok: bool, rule: str, message: str) -> None:
    if not ok:
        raise ConformanceError(f"[{rule}] {message}")


def _read_all(adapter, units: list[str]) -> list[Episode | Rejection]:
    return [item for unit in units for item in adapter.read(unit)]


def _check_episode(episode: Episode, control_dims: int) -> None:
    who = f"episode {episode.episode_id!r}"
    _require(isinstance(episode.episode_id, str) and episode.episode_id != "", "well-formed", "empty episode id")
    controls = np.asarray(episode.controls)
    _require(controls.shape == (len(episode.frames), control_dims), "well-formed",
             f"{who}: controls have shape {controls.shape}, expected ({len(episode.frames)}, {control_dims})")
    _require(np.issubdtype(controls.dtype, np.floating), "well-formed", f"{who}: controls are {controls.dtype}")
    _require(episode.is_image or episode.fps > 0, "well-formed", f"{who}: fps {episode.fps} for a video episode")
    _require(bool(episode.split), "well-formed", f"{who}: no split")
    _require(bool(episode.source_file), "well-formed", f"{who}: no source file")
    if episode.span is not None:
        start, stop = episode.span
        _require(0 <= start < stop <= len(episode.frames), "well-formed",
                 f"{who}: span {episode.span} is not inside its {len(episode.frames)} frames")


def check_adapter(expect: Expectation, scratch: str) -> Report:
    """Runs every rule (module docstring) and returns what it saw; `scratch` receives the pipeline's output."""
    from unisim.pipelines import convert
    from unisim.shards import reader

    def make():
        return registry.create(expect.dataset, expect.source, expect.split, expect.options)

    units = make().work_units()
    _require(units == make().work_units(), "deterministic", "work units differ between instances")
    _require(len(units) > 0, "deterministic", "the fixture yields no work units")
    adapter = make()
    items = _read_all(adapter, units)
    again = _read_all(make(), units)
    label = lambda i: ("episode", i.episode_id) if isinstance(i, Episode) else ("rejection", i.key)  # noqa: E731
    _require([label(i) for i in items] == [label(i) for i in again], "deterministic", "two reads differ")
    for item in items:
        _require(isinstance(item, (Episode, Rejection)), "items", f"yielded a {type(item).__name__}")
        if isinstance(item, Rejection):
            _require(bool(item.reason) and bool(item.detail), "items",
                     f"rejection {item.key!r} lacks a reason or detail")
    episodes = [i for i in items if isinstance(i, Episode)]
    rejections = [i for i in items if isinstance(i, Rejection)]
    ids = [e.episode_id for e in episodes]
    duplicates = sorted(k for k, n in collections.Counter(ids).items() if n > 1)
    _require(not duplicates, "unique keys", f"episode ids repeat: {duplicates[:5]}")
    for episode in episodes:
        _check_episode(episode, len(adapter.control_names))
    _require(len(episodes) == expect.episodes, "counts", f"{len(episodes)} episodes, expected {expect.episodes}")
    found = dict(collections.Counter(r.reason for r in rejections))
    _require(found == expect.read_rejections, "counts",
             f"adapter rejections {found}, expected {expect.read_rejections}")

    output = os.path.join(scratch, f"conformance-{expect.dataset}")
    manifest, counters = convert.run(convert.ConvertConfig(dataset=expect.dataset, source=expect.source,
                                                           output=output, split=expect.split,
                                                           adapter_options=dict(expect.options)),
                                     command="conformance")
    records = list(reader.iter_records(output, manifest))  # decode() validates every record
    written = {r.episode_id for r in records}
    dead = list(reader.iter_dead_letter(output, manifest))
    _require(dict(collections.Counter(r.reason for r in dead)) == manifest.rejected_reasons, "accounted for",
             f"the dead-letter files ({len(manifest.dead_letter)}) do not hold what the manifest counts")
    dead_keys = {r.key for r in dead}
    # An episode is rejected whole (key = its id) or clip by clip (keys "<id>/<clip index>").
    lost = sorted(i for i in ids if i not in written and not any(k == i or k.startswith(f"{i}/") for k in dead_keys))
    _require(not lost, "accounted for", f"episodes neither written nor rejected: {lost[:5]}")
    missing = sorted(r.key for r in rejections if r.key not in dead_keys)
    _require(not missing, "accounted for", f"adapter rejections missing from the dead letter: {missing[:5]}")
    _require(all(r.reason and r.detail for r in dead), "accounted for", "a dead-letter line lacks a reason")
    _require(manifest.records == len(records) == expect.records, "counts",
             f"{len(records)} records (manifest {manifest.records}), expected {expect.records}")
    _require(manifest.rejected_reasons == expect.rejected_reasons, "counts",
             f"pipeline rejections {manifest.rejected_reasons}, expected {expect.rejected_reasons}")
    altered = dict(collections.Counter(a for e in episodes for a in e.altered))
    counted = {k: v for k, v in manifest.counters.items() if k in altered or k in expect.altered}
    _require(altered == counted == expect.altered, "counts",
             f"episodes kept altered {altered} (manifest {counted}), expected {expect.altered}")
    _require(manifest.source_episodes == len(episodes) + len(rejections), "counts",
             f"manifest counts {manifest.source_episodes} source episodes, the adapter yielded "
             f"{len(episodes)} + {len(rejections)} rejected")
    return Report(units, episodes, rejections, manifest, counters, output, dead)
