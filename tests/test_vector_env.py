"""simulator/vector.py: N environments over one tiny simulator, stepped in one batched sampler call per step —
spaces, gymnasium's NEXT_STEP autoreset, seeding against the single environment, and bad actions (issue 22)."""

import gymnasium
import numpy as np
import pytest

from unisim.simulator.core import ActionError, SamplerSettings, Simulator
from unisim.simulator.envs import SimulatorGymEnv
from unisim.simulator.vector import SimulatorVectorEnv

H, W = 24, 40
IMAGES = np.random.default_rng(0).integers(0, 256, (3, H, W, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def sim(tiny_workdirs):
    return Simulator.from_checkpoints(tiny_workdirs["base"], sampler=SamplerSettings(steps=2), max_batch=4)


def _actions(envs, n, dx=0.01):
    return {"text": ("push the block 1 to the left",) * n,
            "controls": np.tile(np.array([dx, -0.02], np.float32), (n, 1))}


def test_spaces_batch_and_one_sampler_call_per_step(sim):
    envs = SimulatorVectorEnv(sim, IMAGES, num_envs=4, max_steps=3)
    assert envs.observation_space.shape == (4, H, W, 3) and envs.single_observation_space.shape == (H, W, 3)
    observations, infos = envs.reset(seed=5)
    assert observations in envs.observation_space and list(infos["seed"]) == list(infos["seed"])
    sample = envs.action_space.sample()
    assert len(sample["text"]) == 4 and sample["controls"].shape == (4, 2)
    calls = sim.sampler_calls
    observations, rewards, terminated, truncated, infos = envs.step(_actions(envs, 4))
    assert sim.sampler_calls == calls + 1  # four environments, one sampling call
    assert observations.shape == (4, H, W, 3) and rewards.shape == terminated.shape == truncated.shape == (4,)
    assert all(f.shape == (16, H, W, 3) for f in infos["frames"]) and list(infos["steps"]) == [1] * 4
    envs.close()


def test_autoreset_on_the_next_step_and_seeding_matches_the_single_env(sim):
    envs = SimulatorVectorEnv(sim, IMAGES, num_envs=2, max_steps=1)
    first, infos = envs.reset(seed=11)
    single = SimulatorGymEnv(sim, IMAGES, max_steps=1)
    for i in range(2):  # sub-environment i is the single environment reset with seed + i
        observation, info = single.reset(seed=11 + i)
        np.testing.assert_array_equal(first[i], observation)
        assert info["seed"] == infos["seed"][i]
    _, _, terminated, truncated, _ = envs.step(_actions(envs, 2))
    assert truncated.all() and not terminated.any()
    calls = sim.sampler_calls
    observations, rewards, terminated, truncated, infos = envs.step(_actions(envs, 2, dx=0.05))  # ignored: resets
    assert sim.sampler_calls == calls  # nothing sampled: both reset
    assert not (terminated | truncated).any() and not rewards.any() and list(infos["steps"]) == [0, 0]
    assert list(infos["frames"]) == [None, None] and observations in envs.observation_space
    again = SimulatorVectorEnv(sim, IMAGES, num_envs=2, max_steps=1)
    np.testing.assert_array_equal(again.reset(seed=11)[0], first)  # the same seed, the same episodes
    envs.close()
    again.close()
    single.close()


def test_bad_actions_are_refused(sim):
    envs = SimulatorVectorEnv(sim, IMAGES, num_envs=2)
    envs.reset(seed=0)
    with pytest.raises(ActionError):
        envs.step({"controls": np.zeros((2, 3), np.float32)})
    with pytest.raises(ValueError, match="batched"):
        envs.step([0, 1])
    with pytest.raises(ValueError, match="num_envs"):
        SimulatorVectorEnv(sim, IMAGES, num_envs=0)
    envs.close()


def test_env_checker_style_checks_against_gymnasiums_sync_vector_env(sim):
    """gymnasium has no checker for vector environments: its env_checker's checks, applied to the batch, and
    agreement with gymnasium's own SyncVectorEnv over the single environment (one sampler call per environment)."""
    from gymnasium.utils.env_checker import check_space_limit, data_equivalence
    from gymnasium.utils.passive_env_checker import check_obs, data_shares_objects

    # normalized controls: the [-1, 1] Box that env_checker recommends (and the option's path through the batch)
    envs = SimulatorVectorEnv(sim, IMAGES, num_envs=2, max_steps=2, normalize_controls=True)
    reference = gymnasium.vector.SyncVectorEnv([lambda: SimulatorGymEnv(sim, IMAGES, max_steps=2,
                                                                        normalize_controls=True)] * 2,
                                               autoreset_mode=gymnasium.vector.AutoresetMode.NEXT_STEP)
    assert envs.single_action_space == reference.single_action_space
    assert envs.observation_space == reference.observation_space
    check_space_limit(envs.single_observation_space, "observation")
    check_space_limit(envs.single_action_space["controls"], "action")  # warns unless symmetric and normalized

    def rollout():
        observations, infos = envs.reset(seed=7)
        expected, expected_infos = reference.reset(seed=7)
        check_obs(observations, envs.observation_space, "reset")
        assert data_equivalence(observations, expected, exact=True)
        assert list(infos["seed"]) == list(expected_infos["seed"])
        seen = [observations]
        for t in range(5):  # two episodes of two steps, with the autoreset step between them
            actions = _actions(envs, 2, dx=0.01 * t)
            observations, rewards, terminated, truncated, infos = envs.step(actions)
            expected, expected_rewards, expected_terminated, expected_truncated, _ = reference.step(actions)
            check_obs(observations, envs.observation_space, "step")
            np.testing.assert_allclose(observations, expected, atol=3)  # batched kernels round differently
            assert data_equivalence((rewards, terminated, truncated),
                                    (expected_rewards, expected_terminated, expected_truncated), exact=True)
            assert not data_shares_objects(seen[-1], observations)  # returned arrays are not reused
            seen.append(observations)
        return seen

    first = rollout()
    assert data_equivalence(first, rollout(), exact=True)  # the same seed and actions, the same frames
    envs.close()
    reference.close()
