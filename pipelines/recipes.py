"""One Dataflow recipe per Table 5 dataset the adapters cover: `unisim convert --recipe NAME --source … --output …`.

A recipe is the flags that match the capacity model's assumptions (`bench/capacity.py`: frame rate, window, size),
the worker shape and disk that suit the family, and the output folder that `trainer/configs/mixtures/
paper_table5.py` reads. Its flags come first on the command line, so any flag given after `--recipe` overrides
them. docs/recipes.md prices each one (vCPU-hours and wall time from the capacity model's rates).
"""

from __future__ import annotations

import dataclasses

# The paper's clip (Table 6 and `schemas.record`): 20 frames a record, 4 of them history; stored at 192×320, the
# largest size the cascade needs. A recipe states only what differs from those defaults.
WORKER_4 = ("--machine_type", "n2-standard-4", "--clip_threads", "4")
WORKER_8 = ("--machine_type", "n2-standard-8", "--clip_threads", "8")  # 1080p video decoding: more cores a worker


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    dataset: str  # the adapter
    folder: str  # the output folder's name in paper_table5.py's MIXTURE
    flags: tuple[str, ...]  # conversion flags (frame rate, window, adapter options)
    worker: tuple[str, ...]  # machine type and clip threads
    disk_gb: int  # each worker's boot disk: videos are copied to scratch whole before decoding
    capacity: str  # the capacity model's line (docs/scale.md) the recipe matches

    def argv(self) -> list[str]:
        """The flags the recipe stands for, Beam's included (Runner v2: Dataflow's GPU and resource hints need it)."""
        return ["--dataset", self.dataset, *self.flags, *self.worker, "--disk_size_gb", str(self.disk_gb),
                "--experiments", "use_runner_v2"]


RECIPES = {r.name: r for r in [
    Recipe("habitat_objectnav", "habitat_objectnav", "habitat_objectnav", (), WORKER_4, 50, "Habitat HM3D"),
    Recipe("language_table_sim", "language_table", "language_table_sim", (), WORKER_4, 50, "Language Table sim"),
    Recipe("language_table_real", "language_table", "language_table_real", (), WORKER_4, 50, "Language Table real"),
    Recipe("bridge", "bridge", "bridge", (), WORKER_4, 50, "Bridge Data"),
    Recipe("rt1", "rt1", "rt1", (), WORKER_4, 50, "RT-1 data"),
    Recipe("misc_robot_videos", "episode_folders", "misc_robot_videos", (), WORKER_4, 50, "Misc. robot videos"),
    # Human activities: a 4 s window around each narration or segment, 20 frames at 5 fps (the capacity model's
    # "one 4 s window a narration"), not the source's 30–60 fps.
    Recipe("ego4d", "ego4d", "ego4d", ("--fps", "5"), WORKER_8, 250, "Ego4D"),
    Recipe("ssv2", "ssv2", "ssv2", ("--fit_spans",), WORKER_4, 50, "Something-Something V2"),  # the whole ~4 s video
    Recipe("epic_kitchens", "epic_kitchens", "epic_kitchens", ("--fps", "5"), WORKER_8, 250, "EPIC-KITCHENS"),
    Recipe("misc_human_videos", "video_captions", "misc_human_videos", ("--fps", "5"), WORKER_8, 100,
           "Misc. human videos"),
    Recipe("r2r", "r2r", "r2r", (), WORKER_4, 100, "Matterport R2R scans"),
    Recipe("laion400m", "laion", "laion400m", (), WORKER_4, 50, "LAION-400M"),
    Recipe("align", "laion", "align", (), WORKER_4, 50, "ALIGN"),
    Recipe("misc_videos", "video_captions", "misc_videos", ("--fps", "5"), WORKER_4, 50, "Misc. internet videos"),
]}


def expand(argv: list[str]) -> list[str]:
    """`argv` with `--recipe NAME` (or `--recipe=NAME`) replaced by the recipe's flags, placed first so that the
    flags given on the command line override them. Unknown names raise ValueError listing the recipes."""
    out, name, i = [], None, 0
    while i < len(argv):
        if argv[i] == "--recipe" and i + 1 < len(argv):
            name, i = argv[i + 1], i + 2
        elif argv[i].startswith("--recipe="):
            name, i = argv[i].split("=", 1)[1], i + 1
        else:
            out, i = out + [argv[i]], i + 1
    if name is None:
        return argv
    if name not in RECIPES:
        raise ValueError(f"--recipe {name!r}: no such recipe (choose from {', '.join(RECIPES)})")
    return RECIPES[name].argv() + out
