"""Robot datasets in their official layouts (RT-1, BridgeData V2 raw and RLDS, a generic OXE-style RLDS set), each
with planted bad items. Clip arithmetic (default 20 frames per clip, 4 of context): 16 steps make one clip,
24 steps make two (frames 0–15 and 12–23)."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import tensorflow_datasets as tfds

from fixtures import synthetic_frame
from unisim.samples import bridge_format, rt1_format
from unisim.samples.rlds_writer import write_tfds_dataset

import cv2


def jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()


def truncated(image: np.ndarray) -> bytes:
    data = jpeg(image)
    return data[: len(data) * 2 // 3]


def frame(episode: int, step: int, shape: tuple[int, int]) -> np.ndarray:
    return cv2.resize(synthetic_frame(episode, step), (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


# ------------------------------------------------------------------------------------------------------- RT-1
# episode: (steps, instruction, defect at (step) or None)
RT1_EPISODES = [
    (16, "pick coke can", None),
    (16, "open top drawer", ("nan_action", 5)),
    (16, "place apple in bowl", ("truncated_jpeg", 3)),
    (24, "move sponge near can", ("missing_image", 20)),  # second clip only
    (16, "", None),  # empty instruction
    (24, "close middle drawer", None),
]
RT1_EXPECT = dict(episodes=6, read_rejections={}, records=4,  # 1 + 0 + 0 + 1 + 0 + 2
                  rejected_reasons={"empty_text": 1, "missing_image": 1, "non_finite_control": 1,
                                    "truncated_image": 1})


def rt1_action(rng, t: int) -> dict[str, np.ndarray]:
    return {k: rng.uniform(-1, 1, s).astype(np.float32) for k, s in rt1_format.ACTION_SHAPES.items()}


def write_rt1(data_dir: str) -> str:
    def examples():
        rng = np.random.default_rng(4)
        for e, (steps, instruction, defect) in enumerate(RT1_EPISODES):
            step_dicts = []
            for t in range(steps):
                image, action = frame(e, t, (256, 320)), rt1_action(rng, t)
                if defect == ("nan_action", t):
                    action["world_vector"][1] = np.nan
                if defect == ("truncated_jpeg", t):
                    image = io.BytesIO(truncated(image))
                if defect == ("missing_image", t):
                    image = io.BytesIO(b"")
                step_dicts.append(rt1_format.step(image, instruction, action, t, steps))
            yield f"ep{e}", rt1_format.episode(step_dicts)

    return rt1_format.write(data_dir, examples, num_shards=2)


# ----------------------------------------------------------------------------------------------- Bridge RLDS
BRIDGE_RLDS_EPISODES = [
    (16, "put the corn in the pot", None),
    (16, "open the microwave", ("nan_action", 9)),
    (16, "wipe the table", ("truncated_jpeg", 0)),
    (16, "", None),  # unlabelled: kept by default
    (24, "flip the pot upright", ("missing_image", 2)),  # first clip only
]
BRIDGE_RLDS_EXPECT = dict(episodes=5, read_rejections={}, records=3,  # 1 + 0 + 0 + 1 + 1
                          rejected_reasons={"missing_image": 1, "non_finite_control": 1, "truncated_image": 1})


def write_bridge_rlds(data_dir: str) -> str:
    def examples():
        rng = np.random.default_rng(5)
        for e, (steps, instruction, defect) in enumerate(BRIDGE_RLDS_EPISODES):
            actions = rng.uniform(-0.02, 0.02, (steps, 7)).astype(np.float32)
            images = []
            for t in range(steps):
                image = frame(e, t, (480, 640))
                if defect == ("nan_action", t):
                    actions[t, 3] = np.nan
                if defect == ("truncated_jpeg", t):
                    image = io.BytesIO(truncated(image))
                if defect == ("missing_image", t):
                    image = io.BytesIO(b"")
                images.append(image)
            yield f"ep{e}", bridge_format.rlds_episode(images, actions, instruction, f"/data/bridge/ep{e}/out.npy")

    return bridge_format.write_rlds(data_dir, examples, num_shards=1)


# ------------------------------------------------------------------------------------------------ Bridge raw
RAW_2023 = "datacol2_toykitchen7/drawer_pnp/01/2023-04-19_09-18-15/raw"
RAW_2021 = "bridge_data_v1/toykitchen1/put_corn_in_pot/00/2021-06-01_10-00-00/raw"  # before the latency fix
PAYLOAD_MARKER = "payload-ran"


class _Payload:
    """What a malicious pickle does when loaded with `pickle.load`: run a shell command."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# trajectory (relative to the root) → (images, instruction, defect)
BRIDGE_RAW_TRAJECTORIES = {
    f"{RAW_2023}/traj_group0/traj0": (17, "put the spoon in the drawer\nplace the spoon inside the drawer", None),
    f"{RAW_2023}/traj_group0/traj1": (17, "close the drawer", "malicious_pickle"),
    f"{RAW_2023}/traj_group0/traj2": (17, "open the drawer", ("missing_image", 7)),
    f"{RAW_2023}/traj_group1/traj0": (17, "take out the pot", ("truncated_jpeg", 11)),
    f"{RAW_2023}/traj_group1/traj1": (17, "move the pan left", ("nan_action", 4)),
    f"{RAW_2023}/traj_group1/traj2": (17, "stack the cups", "garbage_pickle"),
    f"{RAW_2021}/traj_group0/traj0": (18, None, "arrays"),  # no lang.txt, actions as bare arrays, latency shift
    "datacol2_toykitchen7/drawer_pnp/01/2023-04-19_09-18-15_lmdb/raw/traj_group0/traj0": (17, "skipped", None),
}
BRIDGE_RAW_EXPECT = dict(episodes=6, read_rejections={"unreadable_pickle": 1, "unsafe_pickle": 1}, records=3,
                         rejected_reasons={"missing_image": 1, "non_finite_control": 1, "truncated_image": 1,
                                           "unreadable_pickle": 1, "unsafe_pickle": 1})


def write_bridge_raw(root: str, marker_dir: str) -> str:
    """Writes the trajectories above; the malicious pickle would create `<marker_dir>/payload-ran` if ever run."""
    rng = np.random.default_rng(6)
    for e, (rel, (count, instruction, defect)) in enumerate(BRIDGE_RAW_TRAJECTORIES.items()):
        images = [frame(e, t, (480, 640)) for t in range(count)]
        actions = rng.uniform(-0.02, 0.02, (count - 1, 7))
        policy_out = None
        if isinstance(defect, tuple) and defect[0] == "missing_image":
            images[defect[1]] = None
        if isinstance(defect, tuple) and defect[0] == "truncated_jpeg":
            images[defect[1]] = truncated(images[defect[1]])
        if isinstance(defect, tuple) and defect[0] == "nan_action":
            actions[defect[1], 2] = np.nan
        if defect == "malicious_pickle":
            policy_out = pickle.dumps([_Payload(os.path.join(marker_dir, PAYLOAD_MARKER))])
        if defect == "garbage_pickle":
            policy_out = bridge_format.numpy1_pickle([{"actions": a} for a in actions])[:40]
        bridge_format.write_raw_trajectory(os.path.join(root, rel), images, actions, instruction,
                                           actions_as_dicts=defect != "arrays", policy_out=policy_out)
    return root


# ------------------------------------------------------------------------------------- a generic OXE-style set
# Two cameras, a 4-D action tensor, the instruction per episode (in episode_metadata) and an episode id field.
TOY_EPISODES = [
    (16, "pour water into the cup", None),
    (16, "wipe the plate", ("nan_action", 0)),
    (16, "hang the towel", ("truncated_jpeg", 15)),
    (16, "fold the cloth", ("missing_image", 8)),
]
# The val split reuses a train episode's `episode_id`, as the Bridge RLDS builder's per-file counter does: ids are
# unique within a split only (TFDS checks keys per split).
TOY_VAL_EPISODES = [(16, "stack the cups", None), (16, "open the box", None)]
TOY_EXPECT = dict(episodes=6, read_rejections={}, records=3,
                  rejected_reasons={"missing_image": 1, "non_finite_control": 1, "truncated_image": 1})


def write_toy_oxe(data_dir: str) -> str:
    image = lambda: tfds.features.Image(shape=(64, 80, 3), dtype=np.uint8, encoding_format="jpeg")  # noqa: E731
    features = tfds.features.FeaturesDict({
        "episode_metadata": tfds.features.FeaturesDict({"episode_id": tfds.features.Text(),
                                                        "language_instruction": tfds.features.Text()}),
        "steps": tfds.features.Dataset({
            "observation": tfds.features.FeaturesDict({"image": image(), "wrist_image": image(),
                                                       "state": tfds.features.Tensor(shape=(8,), dtype=np.float32)}),
            "action": tfds.features.Tensor(shape=(4,), dtype=np.float32),
            "is_first": tfds.features.Scalar(dtype=np.bool_), "is_last": tfds.features.Scalar(dtype=np.bool_),
            "is_terminal": tfds.features.Scalar(dtype=np.bool_), "reward": tfds.features.Scalar(dtype=np.float32),
            "discount": tfds.features.Scalar(dtype=np.float32),
        }),
    })

    def examples(episodes=TOY_EPISODES):
        rng = np.random.default_rng(7)
        for e, (steps, instruction, defect) in enumerate(episodes):
            step_dicts = []
            for t in range(steps):
                img = frame(e, t, (64, 80))
                action = rng.uniform(-1, 1, 4).astype(np.float32)
                if defect == ("nan_action", t):
                    action[0] = np.inf
                if defect == ("truncated_jpeg", t):
                    img = io.BytesIO(truncated(img))
                if defect == ("missing_image", t):
                    img = io.BytesIO(b"")
                step_dicts.append({"observation": {"image": img, "wrist_image": np.zeros((64, 80, 3), np.uint8),
                                                   "state": np.zeros(8, np.float32)},
                                   "action": action, "is_first": t == 0, "is_last": t == steps - 1,
                                   "is_terminal": t == steps - 1, "reward": np.float32(0), "discount": np.float32(1)})
            yield f"ep{e}", {"episode_metadata": {"episode_id": f"toy-{e:04d}", "language_instruction": instruction},
                             "steps": step_dicts}

    return write_tfds_dataset(data_dir, "toy_oxe", "1.0.0", features,
                              {"train": examples, "val": lambda: examples(TOY_VAL_EPISODES)}, num_shards=2)
