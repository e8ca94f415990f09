"""A conversion killed part-way (SIGKILL) and run again with the same command redoes only the episodes that had not
finished (pipelines/resume.py) and writes the same bytes as a run that was never stopped."""

import os
import re
import signal
import subprocess
import sys
import time

from unisim.samples.fixtures.language_table import write_language_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPISODES = 24


def _command(source, output):
    return [sys.executable, "-m", "unisim.cli", "convert", "--dataset", "language_table", "--source", source,
            "--output", output, "--records_per_shard", "8"]


def _files(folder):
    return {os.path.relpath(os.path.join(d, n), folder): open(os.path.join(d, n), "rb").read()
            for d, _, names in os.walk(folder) for n in names}


def test_a_killed_conversion_resumes_its_unfinished_episodes_and_ends_with_the_same_bytes(tmp_path):
    source = write_language_table(str(tmp_path / "release"), num_episodes=EPISODES, steps=16, plant_defects=False)
    output = str(tmp_path / "clips")
    run = lambda: subprocess.run(_command(source, output), capture_output=True, text=True, cwd=ROOT)  # noqa: E731
    first = run()
    assert first.returncode == 0, first.stderr[-3000:]
    reference = _files(output)
    assert not os.path.exists(os.path.join(output, ".tmp-resume"))  # a completed run keeps nothing behind
    assert "resumed:" not in first.stdout

    # The same command, killed once some episodes are finished and before the manifest is written.
    kept = os.path.join(output, ".tmp-resume", "episodes")
    process = subprocess.Popen(_command(source, output), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if os.path.isdir(kept) and len(os.listdir(kept)) >= EPISODES // 4:
            break
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before the kill"
    finished = len([n for n in os.listdir(kept) if n.endswith(".pkl")])
    assert EPISODES // 4 <= finished < EPISODES and not os.path.exists(os.path.join(output, "manifest.json"))

    again = run()
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = re.search(r"resumed: (\d+) episodes? kept from an earlier run of this command, (\d+) episodes? "
                        r"converted now", again.stdout)
    assert resumed, again.stdout
    kept_count, converted = int(resumed.group(1)), int(resumed.group(2))
    print(f"killed after {finished} of {EPISODES} episodes; the re-run kept {kept_count} and converted {converted}")
    assert kept_count >= finished and kept_count + converted == EPISODES and converted > 0
    assert _files(output) == reference  # byte for byte, manifest included


def test_only_the_same_runs_kept_episodes_survive_the_cleaner(tmp_path):
    """Another command's (other options, other units) kept episodes are cleared, never reused."""
    from unisim.pipelines import output as out
    from unisim.pipelines import resume

    output = str(tmp_path / "clips")
    os.makedirs(output)
    mine = resume.fingerprint({"records_per_shard": 8}, ["train[0shard]"])
    resume.start(output, mine)
    resume.EpisodeStore(resume.folder(output)).put("episode_007", [(None, b"clip")])
    assert resume.matches(output, mine)
    assert resume.EpisodeStore(resume.folder(output), look=False).get("episode_007") is None  # a fresh run's store
    assert resume.start(output, mine) == 1  # the next run of the same command finds it
    assert resume.EpisodeStore(resume.folder(output)).get("episode_007") == [(None, b"clip")]
    assert resume.EpisodeStore(resume.folder(output)).get("episode_008") is None
    other = resume.fingerprint({"records_per_shard": 16}, ["train[0shard]"])
    assert not resume.matches(output, other) and other != resume.fingerprint({"records_per_shard": 8}, ["x"])
    out.prepare_output_dir(output, keep=resume.RESUME_NAME)  # the matching run keeps them
    assert resume.start(output, mine) == 1
    out.prepare_output_dir(output)  # any other run clears them
    assert os.listdir(output) == []
