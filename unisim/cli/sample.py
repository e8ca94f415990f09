"""Write built-in sample data in an official release format (prints the path to give `unisim convert --source`):

    tabletop        the tabletop world's episodes, Language Table RLDS format (`--dataset language_table`)
    activity_video  short videos with labels, Something-Something V2 layout (`--dataset ssv2`)
    image_text      captioned images, img2dataset's webdataset layout with some failed downloads (`--dataset laion`)
    tiny_t5         a tiny, randomly initialised T5 text encoder (no pretrained weights can be downloaded here)"""

from __future__ import annotations

import dataclasses

from unisim.schemas.options import add_flags, from_flags, option

WORLDS = ("tabletop", "activity_video", "image_text", "tiny_t5")


@dataclasses.dataclass(frozen=True)
class SampleOptions:
    output: str = option(help="folder to write into (created)")
    count: int = option(8, "tabletop: episodes; activity_video: videos; image_text: images", flag="episodes")
    seed: int = option(0, "random seed: the same seed writes the same bytes")
    max_steps: int = option(30, "tabletop: steps per episode at most")
    workers: int = option(1, "tabletop: processes simulating episodes (the same bytes for any count)")
    tasks: int = option(1, "tabletop: pushes chained in each episode (long episodes for multi-segment rollouts: "
                           "3 with --max_steps 60); each step's instruction is its task's",
                        flag="tasks_per_episode")


def add_arguments(parser) -> None:
    parser.add_argument("world", choices=WORLDS, help="which sample")
    add_flags(parser, SampleOptions)


def run(args, _rest) -> int:
    options = from_flags(SampleOptions, args)
    from unisim.samples import tabletop

    if args.world == "tiny_t5":
        from unisim.samples import tiny_t5

        print(tiny_t5.write_tiny_t5(options.output, corpus=tabletop.instruction_corpus(), seed=options.seed))
    elif args.world == "activity_video":
        from unisim.samples import activity_video

        print(activity_video.write_sample(options.output, num_videos=options.count, seed=options.seed))
    elif args.world == "image_text":
        from unisim.samples import image_text

        print(image_text.write_sample(options.output, num_images=options.count, seed=options.seed))
    else:
        print(tabletop.write_sample(options.output, num_episodes=options.count, seed=options.seed,
                                    max_steps=options.max_steps, workers=options.workers, tasks=options.tasks))
    return 0
