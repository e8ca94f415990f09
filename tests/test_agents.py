"""Agents at toy size (agents/): the tasks and their one success rule, colour detection on pybullet and generated
frames, the pybullet judging with its references, the pixel policy (a step, a fit, save/load), the hindsight
relabelling, one imagined round in a tiny learned simulator, and the rule that learning never imports the physics."""

import os
import subprocess
import sys

import numpy as np
import pytest

from unisim.agents import detect, stats, tasks
from unisim.agents.policy import Demos, Policy, PolicyConfig, fit
from unisim.agents.tasks import Positions, Task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tasks_have_distinct_codes_and_are_read_back_from_their_text():
    codes = {tuple(t.code()) for t in tasks.ALL_TASKS}
    assert len(tasks.ALL_TASKS) == 20 and len(codes) == 20
    assert tasks.task_of("language_table_tabletop_sim: push the red block to the left") == Task("push", "red", "left")
    assert tasks.task_of("move to the blue block") == Task("point", "blue")
    assert tasks.task_of("open the drawer") is None
    with pytest.raises(ValueError):
        Task("point", "red", "left")


def test_one_success_rule_for_point_and_push():
    start = Positions(effector=np.array([0.3, 0.0]), blocks={"red": np.array([0.3, 0.2]), "blue": None})
    near = Positions(effector=np.array([0.3, 0.115]), blocks={"red": np.array([0.3, 0.2]), "blue": None})
    far = Positions(effector=np.array([0.3, 0.105]), blocks={"red": np.array([0.3, 0.2]), "blue": None})
    assert tasks.succeeded(Task("point", "red"), start, near)  # 8.5 cm
    assert not tasks.succeeded(Task("point", "red"), start, far)  # 9.5 cm
    assert not tasks.succeeded(Task("point", "blue"), start, near)  # not detected: no success
    pushed = Positions(effector=np.array([0.3, 0.1]), blocks={"red": np.array([0.31, 0.26]), "blue": None})
    assert tasks.succeeded(Task("push", "red", "right"), start, pushed)  # +6 cm along +y
    assert not tasks.succeeded(Task("push", "red", "down"), start, pushed)  # 1 cm along +x
    assert set(tasks.hindsight_tasks(start, pushed)) == {Task("push", "red", "right")}


def test_positions_read_from_pybullet_frames_at_the_base_size_match_the_physics():
    pytest.importorskip("pybullet")
    from unisim.agents import world
    from unisim.samples import tabletop

    with tabletop.TabletopWorld() as physics:
        for seed in (1, 2, 3):
            frame = world.observe(physics.reset(seed), (24, 40))
            found, truth = detect.positions(frame), world.state(physics)
            for colour in tasks.COLOURS:
                assert np.linalg.norm(found.blocks[colour] - truth.blocks[colour]) < 0.01, (seed, colour)
            assert np.linalg.norm(found.effector - truth.effector) < 0.03
    assert detect.positions(np.full((24, 40, 3), 110, np.uint8)).blocks == {c: None for c in tasks.COLOURS}


def test_the_physics_world_judges_the_references():
    pytest.importorskip("pybullet")
    from unisim.agents import world

    for family in ("point", "push"):
        assert world.evaluate("scripted", range(500, 502), family)["success"] == 1.0
    still = Policy.create(PolicyConfig())
    still.act = lambda frames, tasks_, rng=None, noise=0.0: np.zeros((len(tasks_), 8, 2))
    result = world.evaluate(still, range(500, 502), "push")
    assert result["success"] == 0.0 and result["episodes"] == 2 and result["interval"][1] > 0.5
    assert stats.wilson(70, 100)[0] == pytest.approx(0.604, abs=0.002)


def test_the_policy_acts_within_bounds_fits_demonstrations_and_round_trips(tmp_path):
    config = PolicyConfig(chunk=4, hidden=32, channels=8, keypoints=8)
    policy = Policy.create(config)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (6, 24, 40, 3), dtype=np.uint8)
    task_list = [tasks.ALL_TASKS[i] for i in range(6)]
    chunks = policy.act(frames, task_list, rng, noise=0.05)
    assert chunks.shape == (6, 4, 2) and np.abs(chunks).max() <= config.max_step
    wanted = rng.uniform(-0.02, 0.02, (6, 4, 2))
    demos = Demos.of(list(zip(frames, task_list, wanted)))
    fitted = fit(policy, demos, steps=300, batch=6, learning_rate=3e-3)
    before, after = (np.abs(p.act(frames, task_list) - wanted).mean() for p in (policy, fitted))
    assert after < 0.3 * before, (before, after)
    fitted.save(str(tmp_path / "policy"))
    np.testing.assert_array_equal(Policy.load(str(tmp_path / "policy")).act(frames, task_list),
                                  fitted.act(frames, task_list))


def _frame(effector_rc, blocks_rc):
    """A 24×40 frame of the board with a 2×2 block per colour and a 3×3 effector at the given pixels."""
    from unisim.samples.tabletop_spec import BLOCK_COLORS, BOARD_RGB, EFFECTOR_RGB

    frame = np.empty((24, 40, 3), np.uint8)
    frame[:] = BOARD_RGB
    for colour, (r, c) in blocks_rc.items():
        frame[r:r + 2, c:c + 2] = BLOCK_COLORS[colour]
    r, c = effector_rc
    frame[r - 1:r + 2, c - 1:c + 2] = EFFECTOR_RGB
    return frame


def test_hindsight_relabelling_turns_what_a_rollout_did_into_demonstrations():
    from unisim.agents.imagination import Imagined, relabel

    blocks = {"red": (5, 30), "blue": (18, 5), "green": (18, 30), "yellow": (5, 5)}
    start = _frame((12, 20), blocks)
    beside_red = _frame((6, 27), blocks)  # 3 px (~6 cm) from red: a point at red, nothing else
    frames = [start, beside_red, beside_red]
    chunks = [np.full((8, 2), 0.01), np.zeros((8, 2))]
    episode = Imagined(Task("push", "blue", "up"), frames, chunks, [detect.positions(f) for f in frames])
    samples = relabel([episode])
    assert [(s[1], s[2][0, 0]) for s in samples] == [(Task("point", "red"), 0.01)]  # up to the first success only
    assert samples[0][0] is start


def test_one_imagined_round_in_a_tiny_learned_simulator(tiny_workdirs):
    from unisim.agents.imagination import imagine, improve
    from unisim.simulator.core import SamplerSettings, Simulator

    sim = Simulator.from_checkpoints(tiny_workdirs["base"], sampler=SamplerSettings(steps=1, guidance=0.0),
                                     max_batch=2)
    policy = Policy.create(PolicyConfig(chunk=sim.frames, hidden=16, channels=4, keypoints=4))
    starts = [np.full((1, 24, 40, 3), 110, np.uint8), np.full((2, 24, 40, 3), 120, np.uint8)]
    rng = np.random.default_rng(0)
    episodes = imagine(sim, policy, starts, [Task("point", "red"), Task("push", "red", "up")], 2, rng, noise=0.01)
    assert [len(e.frames) for e in episodes] == [3, 3] and all(e.frames[1].shape == (24, 40, 3) for e in episodes)
    assert all(len(e.positions) == 3 and set(e.positions[0].blocks) == set(tasks.COLOURS) for e in episodes)
    recorded = Demos.of([(starts[0][0], Task("push", "red", "up"), np.zeros((sim.frames, 2)))])
    improved, summary = improve(sim, policy, recorded, starts, budget_s=0.0, batch=2, fit_steps=2, log=lambda m: None)
    assert summary["rounds"] == 1 and summary["episodes"] == 2 and improved.params is not policy.params


def test_learning_in_the_simulator_never_imports_the_physics_world():
    probe = ("import sys, unisim.agents.imagination, unisim.agents.policy, unisim.agents.hindsight, "
             "unisim.agents.planner; "
             "bad = [m for m in ('pybullet', 'unisim.samples.tabletop', 'unisim.agents.world') if m in sys.modules]; "
             "assert not bad, bad")
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=ROOT)


# ---- long-horizon planning: hindsight rollouts, the planner, goals in the physics world

def _moved(frame_blocks, colour, dr, dc):
    return {c: ((r + dr, col + dc) if c == colour else (r, col)) for c, (r, col) in frame_blocks.items()}


def test_hindsight_labels_say_which_push_the_frames_show():
    from unisim.agents.hindsight import Rollout, push_in_hindsight, relabel

    blocks = {"red": (5, 30), "blue": (18, 10), "green": (18, 30), "yellow": (5, 8)}
    start = _frame((12, 20), blocks)
    red_left = _frame((5, 33), _moved(blocks, "red", 0, -4))  # 4 px (8 cm) toward image left
    then_blue_up = _frame((20, 10), _moved(_moved(blocks, "red", 0, -4), "blue", -4, 0))
    positions = [detect.positions(f) for f in (start, red_left, red_left, then_blue_up)]
    assert push_in_hindsight(positions[0], positions[1]) == Task("push", "red", "left")
    assert push_in_hindsight(positions[1], positions[2]) is None  # nothing moved: no label
    commanded = [Task("push", "red", "left"), Task("push", "green", "up"), Task("push", "green", "up")]
    rollout = Rollout(commanded, [start, red_left, red_left, then_blue_up], [start], positions,
                      [push_in_hindsight(a, b) for a, b in zip(positions, positions[1:])])
    samples = relabel([rollout])
    # The second instruction did nothing and is dropped; the third moved blue, not green, and says so.
    assert [s[2] for s in samples] == [Task("push", "red", "left"), Task("push", "blue", "up")]
    assert all(s[1] is then_blue_up for s in samples) and samples[0][0] is start and samples[1][0] is red_left


def test_the_planner_learns_which_block_to_push_and_its_mirror_images(tmp_path):
    from unisim.agents.tasks import PUSHES
    from unisim.agents.planner import FLIP_COLUMNS, FLIP_ROWS, Planner, PlannerConfig, PlanSamples, accuracy, fit

    # Mirror maps: flipping twice is the identity, and a column flip swaps left and right only.
    assert (FLIP_COLUMNS[FLIP_COLUMNS] == np.arange(16)).all() and (FLIP_ROWS[FLIP_ROWS] == np.arange(16)).all()
    assert PUSHES[FLIP_COLUMNS[PUSHES.index(Task("push", "red", "left"))]] == Task("push", "red", "right")
    assert PUSHES[FLIP_ROWS[PUSHES.index(Task("push", "red", "left"))]] == Task("push", "red", "left")
    blocks = {"red": (5, 30), "blue": (17, 10), "green": (17, 30), "yellow": (5, 8)}
    shifts = {"left": (0, -4), "right": (0, 4), "up": (-4, 0), "down": (4, 0)}
    samples = [(_frame((11, 20), blocks), _frame((11, 20), _moved(blocks, t.colour, *shifts[t.direction])), t)
               for t in PUSHES]
    data = PlanSamples.of(samples)
    planner = Planner.create(PlannerConfig(channels=4, keypoints=16, hidden=64))
    fitted = fit(planner, data, steps=300, batch=16, learning_rate=3e-3)
    # Chance is 1/16; 300 steps over the samples and their mirror images give 0.5 here (a bound, not a quality bar).
    assert accuracy(fitted, data) >= 0.4 > accuracy(planner, data)
    fitted.save(str(tmp_path / "planner"))
    assert Planner.load(str(tmp_path / "planner")).choose(data.frames, data.goals) == fitted.choose(data.frames,
                                                                                                      data.goals)
    data.save(str(tmp_path / "samples.npz"))
    assert (PlanSamples.load(str(tmp_path / "samples.npz")).labels == data.labels).all()


def test_text_only_rollouts_and_following_in_a_tiny_learned_simulator(tiny_workdirs):
    from unisim.agents import hindsight
    from unisim.simulator.core import SamplerSettings, Simulator

    sim = Simulator.from_checkpoints(tiny_workdirs["base"], sampler=SamplerSettings(steps=1, guidance=0.0),
                                     max_batch=4)
    blocks = {"red": (5, 30), "blue": (17, 10), "green": (17, 30), "yellow": (5, 8)}
    starts = [_frame((11, 20), blocks), np.stack([_frame((11, 20), blocks)] * 2)]
    texts = []
    text = lambda instruction: texts.append(instruction) or instruction  # noqa: E731
    rollouts = hindsight.imagine_instructions(sim, starts, text, instructions=(2, 3), segments=1,
                                              rng=np.random.default_rng(0))
    for r in rollouts:
        assert 2 <= len(r.instructions) <= 3 and len(r.frames) == len(r.positions) == len(r.instructions) + 1
        assert len(r.labels) == len(r.instructions) and len(r.video) == 1 + len(r.instructions) * sim.frames
        assert all(t in hindsight.feasible_pushes(r.positions[0]) or r.positions[0].blocks["red"] is None
                   for t in r.instructions[:1])
    assert len(texts) == sum(len(r.instructions) for r in rollouts)  # every step's text came through `text`
    feasible = len(hindsight.feasible_pushes(detect.positions(starts[0])))
    following = hindsight.text_following(sim, starts[:1], text, segments=1)
    assert following["rollouts"] == feasible and 0.0 <= following["success"] <= 1.0
    shuffled = hindsight.text_following(sim, starts[:1], text, segments=1, shuffled=True)
    assert all(o["text"] != o["task"] for o in shuffled["outcomes"])


def test_a_goal_is_judged_in_the_physics_world_by_the_distance_it_closes():
    pytest.importorskip("pybullet")
    from unisim.agents import world
    from unisim.samples import tabletop

    a, b = {"red": np.array([0.0, 0.0])}, {"red": np.array([0.3, 0.4])}
    assert world.distance_reduction(a, b, b, ["red"]) == 1.0 and world.distance_reduction(a, a, b, ["red"]) == 0.0
    with tabletop.TabletopWorld() as physics:
        goal = world.make_goal(physics, 3_000_000)
        assert 3 <= len(goal.pushes) <= 5 and goal.moved and goal.frame.shape == (24, 40, 3)
        oracle = world.run_plan(physics, goal, "oracle")
        again = world.make_goal(physics, 3_000_000)
    assert oracle["rdg_moved"] > 0.3 and oracle["instructions"]
    assert all(np.array_equal(goal.blocks[c], again.blocks[c]) for c in goal.blocks)  # a seed's goal is fixed


def test_recorded_episodes_and_conditioning_read_from_a_non_local_filesystem_as_from_disk(language_table_clips):
    """`bench/planner.py --workdir gs://…`-style sources: a converted directory read through fileio (here fsspec's
    memory://) gives the same episodes, first and last frames, and the same conditioning rule."""
    import memfs
    from unisim.agents import hindsight
    from unisim.shards import reader

    remote = "memory://bucket/episodes"
    for name in os.listdir(language_table_clips):
        memfs.put(f"{remote}/{name}", open(os.path.join(language_table_clips, name), "rb").read())
    try:
        far = hindsight.recorded_episodes(remote, (24, 40))
        far_text = hindsight.conditioning(remote)("push the red block up")
    finally:
        memfs.clear()
    near = hindsight.recorded_episodes(language_table_clips, (24, 40))
    records = list(reader.iter_records(language_table_clips, validate=False))
    assert len(near) == len({r.episode_id for r in records if r.clip_index == 0}) > 0
    assert [e.episode_id for e in far] == [e.episode_id for e in near]
    for a, b in zip(far, near):
        assert a.text == b.text and a.first.shape == (24, 40, 3)
        np.testing.assert_array_equal(a.first, b.first)
        np.testing.assert_array_equal(a.last, b.last)
    prefix = reader.read_manifest(language_table_clips).conditioning["domain_prefix"]
    assert far_text == f"{prefix}: push the red block up"
