"""The pybullet tabletop world: determinism, the effector's colour in frames, real pushes, and the written sample."""

import os
import re

import numpy as np
import pytest

pytest.importorskip("pybullet")

from unisim.samples import language_table_format, tabletop

INSTRUCTION_PATTERN = re.compile(r"push the (red|blue|green|yellow) block (to the left|to the right|up|down)")


def colour_mask(frame, rgb, tolerance=80):
    """Pixels whose colour is within `tolerance` (per channel) of `rgb`, allowing for shading."""
    return np.all(np.abs(frame.astype(np.int32) - np.array(rgb)) <= tolerance, axis=-1)


def centroid(mask):
    rows, cols = np.nonzero(mask)
    return np.array([cols.mean(), rows.mean()])


def test_same_seed_gives_identical_episodes_and_other_seeds_differ():
    first = tabletop.scripted_episode(11, max_steps=10)
    again = tabletop.scripted_episode(11, max_steps=10)
    other = tabletop.scripted_episode(12, max_steps=10)
    assert first["instruction"] == again["instruction"]
    assert len(first["steps"]) == len(again["steps"])
    for a, b in zip(first["steps"], again["steps"]):
        assert a["observation"]["rgb"].tobytes() == b["observation"]["rgb"].tobytes()
        for key in ("effector_translation", "effector_target_translation"):
            assert a["observation"][key].tobytes() == b["observation"][key].tobytes()
        assert a["action"].tobytes() == b["action"].tobytes()
        assert a["reward"] == b["reward"]
    assert first["steps"][0]["observation"]["rgb"].tobytes() != other["steps"][0]["observation"]["rgb"].tobytes()


def test_reused_world_resets_to_the_same_state():
    actions = [(0.03, 0.0), (0.0, -0.03), (-0.02, 0.02)]
    with tabletop.TabletopWorld() as world:
        runs = []
        for _ in range(2):
            frames = [world.reset(4)] + [world.step(a) for a in actions]
            runs.append((frames, world.effector_xy(), world.block_xy("blue")))
    (frames_a, eff_a, blue_a), (frames_b, eff_b, blue_b) = runs
    assert all(a.tobytes() == b.tobytes() for a, b in zip(frames_a, frames_b))
    assert eff_a.tobytes() == eff_b.tobytes() and blue_a.tobytes() == blue_b.tobytes()


def test_frame_shape_and_actions_are_clipped_to_limits_and_workspace():
    with tabletop.TabletopWorld() as world:
        frame = world.reset(0)
        assert frame.shape == (360, 640, 3) and frame.dtype == np.uint8
        before = world.target.copy()
        # Beyond the 0.1 per-axis limit, toward the workspace's centre (so the workspace does not clip it first).
        toward = np.sign(np.array([np.mean(tabletop.WORKSPACE_X), np.mean(tabletop.WORKSPACE_Y)]) - before)
        world.step(0.5 * toward)
        np.testing.assert_allclose(world.target - before, 0.1 * toward, atol=1e-9)
        for _ in range(10):
            world.step((0.1, 0.1))
        np.testing.assert_allclose(world.target, [tabletop.WORKSPACE_X[1], tabletop.WORKSPACE_Y[1]])
        # The constraint drives the body to the target within a few millimetres.
        assert np.linalg.norm(world.effector_xy() - world.target) < 0.005


def test_effector_colour_appears_where_the_camera_projects_it_and_follows_it():
    with tabletop.TabletopWorld() as world:
        frame = world.reset(1)
        top = tabletop.EFFECTOR_HEIGHT + 0.002  # the camera looks straight down: it sees the effector's top disc
        # The disc's radius in pixels, from the camera model itself.
        radius = np.linalg.norm(world.project((*world.effector_xy() + [0, tabletop.EFFECTOR_RADIUS], top))
                                - world.project((*world.effector_xy(), top)))
        assert radius > 20, "effector barely visible"
        positions = []
        for _ in range(2):
            mask = colour_mask(frame, tabletop.EFFECTOR_RGB)
            assert mask.sum() > 0.7 * np.pi * radius**2, "effector barely visible"
            expected = world.project((*world.effector_xy(), top))
            assert np.linalg.norm(centroid(mask) - expected) < 0.2 * radius
            # Only the effector is magenta-like: every such pixel lies close to it.
            rows, cols = np.nonzero(mask)
            assert np.hypot(cols - expected[0], rows - expected[1]).max() < 1.3 * radius
            positions.append(centroid(mask))
            direction = 1.0 if world.target[1] < 0 else -1.0  # move across the board, away from the edge
            for _ in range(4):
                frame = world.step((0.0, 0.03 * direction))
        # +y is image right: a move of 12 cm along y shifts the effector by tens of pixels horizontally, and not
        # vertically (the camera looks straight down, image up = -x).
        assert abs(positions[1][0] - positions[0][0]) > 40
        assert np.sign(positions[1][0] - positions[0][0]) == np.sign(direction)
        assert abs(positions[1][1] - positions[0][1]) < 5
    for name, rgb in tabletop.BLOCK_COLORS.items():
        assert not colour_mask(np.array([[rgb]], np.uint8), tabletop.EFFECTOR_RGB).any(), name
    assert not colour_mask(np.array([[tabletop.BOARD_RGB]], np.uint8), tabletop.EFFECTOR_RGB).any()


# Expected image-space motion (columns, rows) for each instruction direction.
IMAGE_DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def test_scripted_pushes_move_the_block_in_the_commanded_image_direction():
    seen = {}
    for seed in range(40):
        if len(seen) == len(IMAGE_DIRECTIONS):
            break
        episode = tabletop.scripted_episode(seed, max_steps=30)
        if episode["direction"] not in seen:
            seen[episode["direction"]] = episode
    assert set(seen) == set(IMAGE_DIRECTIONS)
    for direction, episode in seen.items():
        steps = episode["steps"]
        assert INSTRUCTION_PATTERN.fullmatch(episode["instruction"])
        assert episode["target_block"] in episode["instruction"]
        assert all(np.abs(s["action"]).max() <= tabletop.SCRIPTED_MAX_STEP + 1e-6 for s in steps)
        # The actions carry the policy's noise: no two steps of a push repeat one action exactly.
        moving = [tuple(s["action"]) for s in steps[:-1]]
        assert len(set(moving)) == len(moving)
        # Physics: the block really moved along the commanded world direction...
        moved = episode["block_displacement"] @ np.array(tabletop.DIRECTIONS[direction])
        assert moved > tabletop.SUCCESS_DISTANCE, (direction, episode["block_displacement"])
        assert steps[-1]["reward"] == 1.0 and all(s["reward"] == 0.0 for s in steps[:-1])
        assert steps[0]["is_first"] and steps[-1]["is_last"] and steps[-1]["is_terminal"]
        assert not any(s["is_last"] for s in steps[:-1])
        # ...and in the frames the block's colour moved the way the instruction says.
        rgb = tabletop.BLOCK_COLORS[episode["target_block"]]
        start = centroid(colour_mask(steps[0]["observation"]["rgb"], rgb, tolerance=60))
        end = centroid(colour_mask(steps[-1]["observation"]["rgb"], rgb, tolerance=60))
        shift = (end - start) @ np.array(IMAGE_DIRECTIONS[direction])
        assert shift > 10, (direction, start, end)


def test_write_sample_loads_with_tfds_and_round_trips_instructions(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    builder_dir = tabletop.write_sample(str(tmp_path), num_episodes=3, seed=7, max_steps=6)
    builder = tfds.builder_from_directory(builder_dir)
    assert builder.info.splits["train"].num_examples == 3
    episodes = {}
    for example in tfds.as_numpy(builder.as_dataset(split="train")):
        episodes[example["episode_id"].decode()] = list(example["steps"])
    assert sorted(episodes) == [f"tabletop_7_{i:05d}" for i in range(3)]
    for i in range(3):
        expected = tabletop.scripted_episode(tabletop.episode_seed(7, i), max_steps=6)
        steps = episodes[f"tabletop_7_{i:05d}"]
        assert len(steps) == len(expected["steps"])
        assert language_table_format.decode_instruction(steps[0]["observation"]["instruction"]) == \
            expected["instruction"]
        assert steps[0]["is_first"] and steps[-1]["is_last"]
        np.testing.assert_array_equal([s["action"] for s in steps], [s["action"] for s in expected["steps"]])
        frame = steps[0]["observation"]["rgb"]
        assert frame.shape == (360, 640, 3)
        # JPEG is lossy but close to the rendered frame.
        assert np.abs(frame.astype(int) - expected["steps"][0]["observation"]["rgb"].astype(int)).mean() < 4


def test_episodes_simulated_in_worker_processes_are_written_byte_for_byte_the_same(tmp_path):
    one = tabletop.write_sample(str(tmp_path / "one"), num_episodes=3, seed=2, max_steps=4)
    two = tabletop.write_sample(str(tmp_path / "two"), num_episodes=3, seed=2, max_steps=4, workers=2)
    shards = sorted(name for name in os.listdir(one) if ".tfrecord" in name)
    assert shards and shards == sorted(name for name in os.listdir(two) if ".tfrecord" in name)
    for name in shards:
        assert open(os.path.join(one, name), "rb").read() == open(os.path.join(two, name), "rb").read(), name


def test_chained_tasks_make_one_long_episode_whose_instruction_follows_its_task():
    """--tasks_per_episode: the next push starts where the last one ended; each step's instruction is its task's,
    each completed push is rewarded, and one task is the single-push episode exactly."""
    chained = tabletop.scripted_episode(4, max_steps=60, tasks=3)
    texts = [language_table_format.decode_instruction(s["observation"]["instruction"]) for s in chained["steps"]]
    changes = [t for t in range(1, len(texts)) if texts[t] != texts[t - 1]]
    assert len(chained["steps"]) > 36 and len(changes) == 2, (len(chained["steps"]), changes)
    assert all(INSTRUCTION_PATTERN.fullmatch(t) for t in texts) and chained["instruction"] == texts[0]
    rewarded = [t for t, s in enumerate(chained["steps"]) if s["reward"] > 0]
    assert rewarded[:2] == changes  # the frame that shows a finished push is where the next instruction starts
    single, default = tabletop.scripted_episode(4, max_steps=30, tasks=1), tabletop.scripted_episode(4, max_steps=30)
    assert [s["observation"]["rgb"].tobytes() for s in single["steps"]] == [
        s["observation"]["rgb"].tobytes() for s in default["steps"]]
    assert [s["reward"] for s in single["steps"]] == [s["reward"] for s in default["steps"]]
