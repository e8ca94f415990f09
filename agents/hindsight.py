"""Long-horizon experience from the learned simulator, labelled in hindsight (the paper's §4.1): text-only rollouts of
several instructions each from recorded start frames, the last generated frame taken as the goal, and every
instruction labelled by what the generated frames show it did.

    from unisim.agents import hindsight
    text = hindsight.conditioning("clips/train")              # instructions embedded as training embedded them
    starts = [e.first for e in hindsight.recorded_episodes("clips/train", sim.base_size)]
    rollouts = hindsight.imagine_instructions(sim, starts[:64], text, instructions=(3, 5), rng=rng)
    samples = hindsight.relabel(rollouts)                      # (frame, goal, instruction) triples for a planner

**Instructions are text only** (no controls): the simulator must carry out "push the red block to the left" itself.
Each instruction is given for `segments` steps of the simulator (as many as a scripted push of the world takes). A
rollout's next instruction is drawn among the pushes that the blocks *detected in its current generated frame* allow
(`samples.tabletop_spec.push_feasible`), as the world's scripted episodes draw theirs; or a user gives the plans.

**Hindsight labels.** An instruction is labelled with the push its segments show done — the block that moved
farthest along one of the four directions, at least the world's success distance (5 cm), read by colour from the
frames before and after (`agents.detect`) — which is the commanded push when the simulator followed the text, and
another one when it did not. An instruction whose frames show no push is left unlabelled (and counted): its frame
teaches nothing true. The goal of every labelled step is the rollout's last generated frame.

`text_following` measures the first thing all of this rests on: how often a text-only instruction moves the named
block the named way in the generated frames, how far the other blocks drift, and the same with the text of another
instruction (the shuffled-text row).

Like `agents.imagination`, this module imports neither pybullet nor the world (tests/test_agents.py checks).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np

from unisim.agents import detect
from unisim.agents.stats import wilson
from unisim.agents.tasks import PUSH_SEGMENTS, PUSHES, Positions, Task, hindsight_tasks, succeeded
from unisim.samples.tabletop_spec import DIRECTIONS, push_feasible
from unisim.simulator.core import Action, Simulator



@dataclasses.dataclass
class Rollout:
    """One long-horizon rollout: the commanded instructions, the frame at each instruction's start and the last one
    (len(instructions) + 1, at the base size), every generated frame, the positions detected at each boundary and
    each instruction's hindsight label (None: the frames show no push)."""

    instructions: list[Task]
    frames: list[np.ndarray]
    video: list[np.ndarray]
    positions: list[Positions]
    labels: list[Task | None]

    @property
    def goal(self) -> np.ndarray:
        return self.frames[-1]


def conditioning(clips: str) -> Callable[[str], str]:
    """instruction → the text the simulator embeds for it: the conditioning rule (domain prefix, …) the training
    clips at `clips` were converted with (their manifest), so that text actions look like the training's."""
    from unisim.schemas.text import ConditioningSpec, conditioning_text
    from unisim.shards import reader

    spec = ConditioningSpec(**reader.read_manifest(clips).conditioning)
    return lambda instruction: conditioning_text(spec, instruction)


@dataclasses.dataclass
class RecordedEpisode:
    episode_id: str
    text: str  # the episode's instruction, as recorded (no prefix)
    first: np.ndarray  # its first frame [h, w, 3] uint8
    last: np.ndarray  # its last frame


def recorded_episodes(clips: str, size: tuple[int, int], limit: int | None = None) -> list[RecordedEpisode]:
    """Every episode of a converted directory (local or gs://): its first and last frame at `size` and its text,
    in the order of the episodes' first records."""
    from unisim.shards import reader

    manifest = reader.read_manifest(clips)
    firsts, lasts, texts, order = {}, {}, {}, []
    # A local directory is read in place; a remote one shard by shard through a temporary copy.
    for record in reader.iter_records(clips, manifest, [s for s in manifest.shards if s.records], validate=False):
        stored, episode = (record.height, record.width), record.episode_id
        if episode not in texts:
            order.append(episode)
            texts[episode] = record.text
        if record.clip_index == 0:
            firsts[episode] = reader.decode_resized(record.frames[:1], stored, size)[0]
        if record.clip_index >= lasts.get(episode, (-1, None))[0]:
            lasts[episode] = (record.clip_index, record.frames[-1], stored)
    out = []
    for episode in order:
        if episode not in firsts:  # its first clip was rejected at conversion: no true start frame
            continue
        index, frame, stored = lasts[episode]
        out.append(RecordedEpisode(episode, texts[episode], firsts[episode],
                                   reader.decode_resized([frame], stored, size)[0]))
        if limit is not None and len(out) == limit:
            break
    return out


def feasible_pushes(positions: Positions) -> list[Task]:
    """The pushes the detected positions allow (a block not found allows none)."""
    return [t for t in PUSHES if positions.blocks.get(t.colour) is not None
            and push_feasible(positions.blocks[t.colour], t.direction)]


def push_in_hindsight(before: Positions, after: Positions) -> Task | None:
    """The push the change from `before` to `after` shows done: of the pushes that reach the success distance, the
    one whose block moved farthest along its direction; None when there is none."""
    done = [t for t in hindsight_tasks(before, after) if t.family == "push"]
    if not done:
        return None
    return max(done, key=lambda t: float((after.blocks[t.colour] - before.blocks[t.colour])
                                         @ np.asarray(DIRECTIONS[t.direction])))


def imagine_instructions(sim: Simulator, starts: Sequence[np.ndarray], text: Callable[[str], str], *,
                         instructions: tuple[int, int] = (3, 5), plans: Sequence[Sequence[Task]] | None = None,
                         segments: int = PUSH_SEGMENTS, rng: np.random.Generator | None = None, seed: int = 0
                         ) -> list[Rollout]:
    """One rollout per start frame ([h, w, 3] or [n, h, w, 3] uint8), all stepped as one batch: each gives its
    instructions one after the other, text only, `segments` simulator steps each. `plans` fixes each rollout's
    instructions; otherwise each rollout takes between `instructions[0]` and `instructions[1]` of them, each drawn
    from `rng` among the pushes its current generated frame allows."""
    rng = rng if rng is not None else np.random.default_rng(seed)
    sessions = [sim.new_session(frames, seed=seed + i) for i, frames in enumerate(starts)]
    counts = ([len(p) for p in plans] if plans is not None
              else [int(rng.integers(instructions[0], instructions[1] + 1)) for _ in starts])
    rollouts = []
    for session in sessions:
        first = session.history[-1]
        rollouts.append(Rollout([], [first], [first], [detect.positions(first)], []))
    for k in range(max(counts, default=0)):
        active = [i for i in range(len(sessions)) if counts[i] > k]
        for i in active:
            r = rollouts[i]
            if plans is not None:
                r.instructions.append(plans[i][k])
            else:
                options = feasible_pushes(r.positions[-1]) or list(PUSHES)
                r.instructions.append(options[rng.integers(len(options))])
        for _ in range(segments):
            videos = sim.step_sessions([sessions[i] for i in active],
                                       [Action(text=text(rollouts[i].instructions[k].instruction)) for i in active])
            for i, video in zip(active, videos):
                rollouts[i].video.extend(video)
        for i in active:
            r = rollouts[i]
            r.frames.append(r.video[-1])
            r.positions.append(detect.positions(r.video[-1]))
            r.labels.append(push_in_hindsight(r.positions[-2], r.positions[-1]))
    return rollouts


def relabel(rollouts: Sequence[Rollout]) -> list[tuple[np.ndarray, np.ndarray, Task]]:
    """(frame, goal, instruction) for every labelled instruction of every rollout: the frame it started from, the
    rollout's last frame, and its hindsight label."""
    return [(r.frames[k], r.goal, label) for r in rollouts for k, label in enumerate(r.labels) if label is not None]


def imagine_for(sim: Simulator, starts: Sequence[np.ndarray], text: Callable[[str], str], budget_s: float, *,
                batch: int = 32, instructions: tuple[int, int] = (3, 5), segments: int = PUSH_SEGMENTS,
                seed: int = 0, log=None) -> tuple[list[Rollout], dict]:
    """Batches of rollouts from start frames drawn from `starts` until `budget_s` of wall time is spent (a batch
    begun is finished; at least one). Returns the rollouts and a summary (rollouts, instructions, labelled, simulator
    steps, seconds)."""
    rng = np.random.default_rng(seed)
    began, rollouts, steps = time.monotonic(), [], 0
    while not rollouts or time.monotonic() - began < budget_s:
        index = rng.integers(len(starts), size=batch)
        made = imagine_instructions(sim, [starts[i] for i in index], text, instructions=instructions,
                                    segments=segments, rng=rng, seed=seed + len(rollouts))
        rollouts += made
        steps += sum(len(r.instructions) for r in made) * segments
        if log:
            labelled = sum(label is not None for r in rollouts for label in r.labels)
            given = sum(len(r.instructions) for r in rollouts)
            log(f"{len(rollouts)} rollouts, {time.monotonic() - began:.0f} s: {labelled} of {given} instructions "
                f"labelled in hindsight")
    summary = {"rollouts": len(rollouts), "instructions": sum(len(r.instructions) for r in rollouts),
               "labelled": sum(label is not None for r in rollouts for label in r.labels),
               "followed": sum(label == task for r in rollouts for task, label in zip(r.instructions, r.labels)),
               "simulator_steps": steps, "seconds": time.monotonic() - began}
    return rollouts, summary


def text_following(sim: Simulator, starts: Sequence[np.ndarray], text: Callable[[str], str], *,
                   segments: int = PUSH_SEGMENTS, shuffled: bool = False, seed: int = 0, batch: int = 32) -> dict:
    """From each start frame, every push its detected blocks allow, given as text only for `segments` steps (with
    `shuffled`, the text of another of the 16 instructions instead); judged on the generated frames: success = the
    named block moved ≥ 5 cm along the named direction at the end of some step (`agents.tasks.succeeded`); the other
    blocks' drift (metres: the mean over them of their displacement at the end); blocks found at the start and not
    at the end. Returns the rate with its Wilson 95 % interval, the means and every outcome."""
    rng = np.random.default_rng([seed, 7])
    jobs = []
    for i, start in enumerate(starts):
        frame = np.asarray(start)
        frame = frame[-1] if frame.ndim == 4 else frame
        for task in feasible_pushes(detect.positions(frame)):
            others = [t for t in PUSHES if t != task]
            jobs.append((i, task, others[rng.integers(len(others))] if shuffled else task))
    outcomes = []
    for b in range(0, len(jobs), batch):
        part = jobs[b:b + batch]
        # The text given `segments` times, one step each: the positions are read after every step.
        rollouts = imagine_instructions(sim, [starts[i] for i, _, _ in part], text, segments=1,
                                        plans=[[given] * segments for _, _, given in part], seed=seed + b)
        for (i, task, given), r in zip(part, rollouts):
            start, ends = r.positions[0], r.positions[1:]
            found = [c for c in start.blocks if start.blocks[c] is not None]
            drift = [float(np.linalg.norm(ends[-1].blocks[c] - start.blocks[c])) for c in found
                     if c != task.colour and ends[-1].blocks[c] is not None]
            outcomes.append({"start": i, "task": task.instruction, "text": given.instruction,
                             "success": any(succeeded(task, start, p) for p in ends),
                             "other_drift_m": float(np.mean(drift)) if drift else None,
                             "blocks_lost": sum(ends[-1].blocks[c] is None for c in found)})
    wins = sum(o["success"] for o in outcomes)
    drifts = [o["other_drift_m"] for o in outcomes if o["other_drift_m"] is not None]
    return {"success": wins / max(len(outcomes), 1), "interval": list(wilson(wins, len(outcomes))),
            "rollouts": len(outcomes), "successes": wins,
            "other_block_drift_m": float(np.mean(drifts)) if drifts else None,
            "blocks_lost": int(sum(o["blocks_lost"] for o in outcomes)), "segments": segments, "outcomes": outcomes}
