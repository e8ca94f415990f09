"""`unisim eval` (simulator/evaluation/evaluate.py) on held-out tabletop clips, its measures, and `unisim demo` end
to end at a smoke-test size."""

import json
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest

from unisim.simulator.evaluation import evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_effector_is_found_by_colour_where_it_is():
    frame = np.full((24, 40, 3), 128, np.uint8)
    assert evaluate.effector_centroid(frame) is None
    frame[10:13, 30:33] = (255, 0, 255)
    frame[2, 2] = (255, 40, 40)  # a red block is not the effector
    frame[20, 5] = (255, 0, 255)  # nor is one stray magenta pixel
    np.testing.assert_allclose(evaluate.effector_centroid(frame), [11, 31])


def test_psnr_and_ssim_rank_corruptions():
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (4, 24, 40, 3), dtype=np.uint8)
    noisy = lambda s: np.clip(video + rng.normal(0, s, video.shape), 0, 255).astype(np.uint8)  # noqa: E731
    assert evaluate.ssim(video, video) == pytest.approx(1.0)
    assert evaluate.psnr(video, noisy(4)) > evaluate.psnr(video, noisy(32))
    assert evaluate.ssim(video, noisy(4)) > evaluate.ssim(video, noisy(32))


@pytest.fixture(scope="module")
def tabletop_held_out(tiny_t5_dir, tmp_path_factory):
    """Two tabletop episodes (seed 5) in the Language Table format, converted with the tiny models' text encoder."""
    from unisim.pipelines import convert
    from unisim.pipelines.embed import EncoderSettings
    from unisim.samples import tabletop

    root = tmp_path_factory.mktemp("held_out")
    source = tabletop.write_sample(str(root / "source"), num_episodes=2, seed=5)
    output = str(root / "clips")
    convert.run(convert.ConvertConfig(dataset="language_table", source=source, output=output,
                                      text=convert.TextOptions(encoder=EncoderSettings(tiny_t5_dir, batch_size=4))),
                command="test")
    return output


def test_unisim_eval_prints_and_writes_the_table(tiny_workdirs, tabletop_held_out, tmp_path):
    output = str(tmp_path / "eval.json")
    result = subprocess.run([sys.executable, "-m", "unisim.cli", "eval", "--checkpoint", tiny_workdirs["base"],
                             "--data", tabletop_held_out, "--history_ablation", tiny_workdirs["base"], "--clips", "2",
                             "--steps", "2", "--output", output], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    table = json.load(open(output))
    names = [row["name"] for row in table["rows"]]
    assert names == ["model, 4 history frames", "null condition", "copy last frame", "shuffled controls",
                     "text only", "model, 4 history frame(s)"]
    assert [row["key"] for row in table["rows"]] == ["model", "null_condition", "copy_last_frame",
                                                     "shuffled_controls", "text_only", "history_4"]
    for name in names:
        assert f"| {name} |" in result.stdout
    # The copy-last-frame baseline predicts no motion: its error is the true displacement, measured independently.
    clips = evaluate.held_out_clips(tabletop_held_out, (24, 40), 16, 2)
    true_moves = [np.linalg.norm(evaluate.effector_centroid(c["targets"][-1]) - evaluate.effector_centroid(
        c["history"][-1])) for c in clips]
    copy = table["rows"][2]
    assert copy["action_error_px"] == pytest.approx(np.mean(true_moves)) and copy["effector_found"] == 1.0
    # The shuffled row gives each clip its neighbour's controls, never its own.
    shuffled = evaluate.shuffled(clips)
    assert all(a is not b and not np.array_equal(a["controls"], b["controls"]) for a, b in zip(clips, shuffled))
    assert all(np.isfinite(row["psnr"]) and -1 <= row["ssim"] <= 1 and row["fvd"] >= 0 for row in table["rows"])


def test_held_out_clips_read_from_a_non_local_filesystem_as_from_disk(tabletop_held_out, tmp_path):
    """`unisim eval --data gs://…`: the clips are read through fileio (here fsspec's memory://) as training reads them,
    only the shards copied to the cache, and equal the local directory's."""
    import memfs

    remote = "memory://bucket/held_out"
    for name in os.listdir(tabletop_held_out):
        memfs.put(f"{remote}/{name}", open(os.path.join(tabletop_held_out, name), "rb").read())
    try:
        far = evaluate.held_out_clips(remote, (24, 40), 16, 2, cache_dir=str(tmp_path / "cache"))
    finally:
        memfs.clear()
    near = evaluate.held_out_clips(tabletop_held_out, (24, 40), 16, 2)
    assert [c["key"] for c in far] == [c["key"] for c in near] and len(near) == 2
    for a, b in zip(far, near):
        np.testing.assert_array_equal(a["history"], b["history"])
        np.testing.assert_array_equal(a["targets"], b["targets"])


def test_unisim_eval_refuses_data_without_usable_clips(tiny_workdirs, tmp_path):
    result = subprocess.run([sys.executable, "-m", "unisim.cli", "eval", "--checkpoint", tiny_workdirs["base"],
                             "--data", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and "unisim eval: error:" in result.stderr


def test_the_demo_runs_end_to_end_at_smoke_size(tmp_path):
    workdir = str(tmp_path / "demo")
    result = subprocess.run([sys.executable, "-m", "unisim.cli", "demo", "--workdir", workdir, "--episodes", "3",
                             "--heldout_episodes", "2", "--steps", "2"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("report.html", "eval.json", "rollout-text.gif", "rollout-controls.gif", "mixture.py"):
        assert os.path.exists(os.path.join(workdir, name)), name
    report = open(os.path.join(workdir, "report.html"), encoding="utf-8").read()
    assert "rollout-text.gif" in report and "copy last frame" in report and "shuffled controls" in report
    assert "4 minutes</b> of wall time" in report  # the budget is stated beside the table
    assert f"Open {os.path.join(workdir, 'report.html')}" in result.stdout
    # The README's examples run as written on the demo's output tree (only its location differs here).
    for command in readme_examples():
        words = [w.replace("demo-output", workdir) for w in shlex.split(command)]
        assert words[0] == ".venv/bin/unisim", command
        run = subprocess.run([sys.executable, "-m", "unisim.cli", *words[1:]], capture_output=True, text=True,
                             cwd=ROOT)
        assert run.returncode == 0, (command, run.stderr[-3000:])
    assert os.path.exists(os.path.join(workdir, "mine.gif")) and os.path.exists(os.path.join(workdir, "my-clips"))


def readme_examples() -> list[str]:
    """The commands between the README's `examples` markers."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    block = text.split("<!-- examples:start -->")[1].split("<!-- examples:end -->")[0]
    commands = [line for line in block.splitlines() if line.startswith(".venv/bin/unisim")]
    assert len(commands) == 5
    return commands


def test_unisim_eval_rolls_out_several_segments_on_generated_history(tiny_workdirs, tiny_t5_dir, tmp_path):
    """--segments 2: long held-out clips (chained tasks; 40 frames a clip: 4 history + 2 × 16 targets), each rolled out
    autoregressively with its recorded controls, scored per segment against the true frames and copy-last-frame."""
    from unisim.pipelines import convert
    from unisim.pipelines.embed import EncoderSettings
    from unisim.samples import tabletop

    source = tabletop.write_sample(str(tmp_path / "source"), num_episodes=2, seed=7, max_steps=60, tasks=3)
    data = str(tmp_path / "clips")
    convert.run(convert.ConvertConfig(dataset="language_table", source=source, output=data, frames_per_clip=40,
                                      text=convert.TextOptions(encoder=EncoderSettings(tiny_t5_dir, batch_size=4))),
                command="test")
    output = str(tmp_path / "eval.json")
    result = subprocess.run([sys.executable, "-m", "unisim.cli", "eval", "--checkpoint", tiny_workdirs["base"],
                             "--data", data, "--clips", "2", "--steps", "2", "--segments", "2", "--fidelity_net", "",
                             "--output", output], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    rollout = json.load(open(output))["rollout"]
    assert rollout["segments"] == 2 and rollout["frames_per_segment"] == 16 and rollout["clips"] == 2
    assert "autoregressive rollouts" in result.stdout and "| 2 |" in result.stdout
    # Copy-last-frame's error after segment k is the true displacement to that segment's last frame.
    clips = evaluate.held_out_clips(data, (24, 40), 16, 2, segments=2)
    assert all(len(c["targets"]) == 32 and c["controls"].shape == (32, 2) for c in clips)
    for k, row in enumerate(rollout["rows"]["copy_last_frame"]):
        moves = [np.linalg.norm(evaluate.effector_centroid(c["targets"][16 * k + 15])
                                - evaluate.effector_centroid(c["history"][-1])) for c in clips]
        assert row["segment"] == k + 1 and row["action_error_px"] == pytest.approx(np.mean(moves))
    assert [r["segment"] for r in rollout["rows"]["model"]] == [1, 2]
    assert set(rollout["goal"]) == {"ratio", "want", "met"}


def test_a_rollout_continues_from_the_models_own_frames(tiny_workdirs, tabletop_held_out):
    """The second segment is conditioned on the first segment's generated frames, not on the true ones."""
    from unisim.simulator.core import SamplerSettings, Simulator

    sim = Simulator.from_checkpoints(tiny_workdirs["base"], sampler=SamplerSettings(steps=2), max_batch=1)
    clip = evaluate.held_out_clips(tabletop_held_out, sim.base_size, sim.frames, 1)[0]
    clip = {**clip, "controls": np.concatenate([clip["controls"], clip["controls"]])}
    video = evaluate.rollout(sim, [clip], seed=3, segments=2)[0]
    session = sim.new_session(clip["history"], seed=3)
    first = sim.step_sessions([session], [evaluate.Action(text=clip["text"], controls=clip["controls"][:16])])[0]
    np.testing.assert_array_equal(session.history, first[-4:])
    second = sim.step_sessions([session], [evaluate.Action(text=clip["text"], controls=clip["controls"][16:])])[0]
    np.testing.assert_array_equal(video, np.concatenate([first, second]))
