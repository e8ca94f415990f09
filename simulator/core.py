"""`Simulator`: a trained base model (and optional super-resolution stages) rolled out autoregressively.

    sim = Simulator.from_checkpoints("runs/base", super_resolution=["runs/sr1", "runs/sr2"])
    first = sim.reset(image)                        # [1, H, W, 3] uint8 at the output size
    frames = sim.step(text="push the red block left")  # [16, H, W, 3]: the next segment
    frames = sim.step(controls=[0.01, -0.02])       # a control vector, normalised with the training statistics
    video = sim.rollout(["open the drawer", "pick up the cup"])

One interaction (paper §2.2): the last `history_frames` (4) frames, with the training's small noise augmentation,
are the history; the action becomes the conditioning (text → the run's T5 encoder; controls → 4096-bin tokens with
the manifest's statistics, for every target frame); the base model samples the next `frames` (16) frames at 24×40
with classifier-free guidance (Eq. 2); each super-resolution stage samples its size conditioned on the previous
stage's video and the same action. The next history is the base model's own last frames.

Many sessions step together: `step_sessions` takes any number of sessions and actions and samples them as one
batch (padded to a power of two up to `max_batch`, so only a few shapes are ever compiled) — what the server
batches concurrent requests into. An example's noise comes from its own session key, so a session's frames depend
on its seed and actions, not on what else shares the batch (up to float rounding in batched kernels).

Text-only generation (paper §11.3): `reset(None)` starts from white placeholder frames, and the first step uses
the stronger `text_only_guidance`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import threading
from collections import OrderedDict
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from unisim.fileio import images
from unisim.schemas.controls import ControlTokenizer
from unisim.schemas.errors import UserError
from unisim.schemas.options import option
from unisim.schemas.text_embeddings import EncoderMismatchError, stored
from unisim.simulator.checkpoint import Stage, load_stage
from unisim.trainer import diffusion
from unisim.trainer import stage as trainer_stage


class ActionError(UserError):
    """An action the simulator cannot take (no text and no controls, wrong control width, non-finite values, …)."""


@dataclasses.dataclass
class Action:
    text: str | None = None
    controls: np.ndarray | Sequence[float] | None = None  # [D] for every target frame, or [frames, D]
    source: str | None = None  # whose control statistics: a mixture source name (default: the only one with controls)


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    sampler: str = option("ddim", "ddim: few deterministic steps; ancestral: the paper's (256 steps, γ 0.1)",
                          choices=("ddim", "ancestral"))
    steps: int | None = option(None, "sampler steps (none: 16 for ddim, 256 for ancestral)")
    gamma: float = option(0.1, "ancestral: log-variance interpolation between the posterior and the prior variance")
    guidance: float = option(1.0, "classifier-free guidance η of Eq. 2; 0 samples the action-conditional model alone "
                                  "(one model call per step)")
    text_only_guidance: float = option(4.0, "η for the first step of a text-only start (white placeholder frames)")

    def __post_init__(self):
        if self.sampler not in ("ddim", "ancestral"):
            raise ValueError(f"sampler must be 'ddim' or 'ancestral', not {self.sampler!r}")
        if self.steps is None:  # frozen: set through object.__setattr__, once, here
            object.__setattr__(self, "steps", 256 if self.sampler == "ancestral" else 16)
        if self.steps < 1:
            raise ValueError(f"sampler steps must be at least 1, not {self.steps}")


@dataclasses.dataclass
class Session:
    """One simulated world: its history at the base size, its random key and how many steps it has taken."""

    history: np.ndarray  # [history_frames, h, w, 3] uint8
    history_mask: np.ndarray  # [history_frames] bool
    seed: int
    steps: int = 0
    placeholder: bool = False  # the history is the white text-only placeholder
    last_frames: np.ndarray | None = None  # the latest output frames [n, H, W, 3] (the observation)


def _bucket(n: int, limit: int) -> int:
    """The padded batch size for n examples: the next power of two, at most `limit`."""
    return min(1 << max(0, (n - 1).bit_length()), limit)


class Simulator:
    def __init__(self, base: Stage, super_resolution: Sequence[Stage] = (), *, text_encoder: str | None = None,
                 check_text_encoder: bool = True, sampler: SamplerSettings = SamplerSettings(), seed: int = 0,
                 max_batch: int = 32):
        if base.super_resolution:
            raise ValueError(f"{base.path} is a super-resolution stage; the first stage must be a base model")
        size = base.size
        for stage in super_resolution:
            if not stage.super_resolution:
                raise ValueError(f"{stage.path} is not a super-resolution stage (its config.stage is "
                                 f"{stage.config.stage!r})")
            if tuple(stage.config.lowres) != size:
                raise ValueError(f"{stage.path} upsamples {tuple(stage.config.lowres)} frames but the stage before "
                                 f"it makes {size}")
            size = stage.size
        self.base, self.super_resolution, self.sampler = base, list(super_resolution), sampler
        self.output_size = size
        self.max_batch, self.seed = max_batch, seed
        inputs = base.config.input
        self.frames, self.history_frames, self.base_size = inputs.frames, inputs.history_frames, base.size
        self.text_tokens, self.text_dim = inputs.text_tokens, base.description.text_dim
        self.control_dims = base.description.control_dims
        self.controls = base.description.controls()
        self._tokenizers = {name: ControlTokenizer(stats) for name, stats in self.controls.items()}
        recorded = base.description.text_encoder
        self._encoder_path = text_encoder or (recorded.path if recorded else None)
        self._check_text_encoder = check_text_encoder
        self._encoder = None
        # Text embeddings by the SHA-256 of the text (a long text is not kept as a key), the last 1024; the lock lets
        # request threads embed while the simulator samples (the server encodes actions before it queues them).
        self._text_cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._text_lock = threading.Lock()
        self._seeds = itertools.count(seed)
        self._samplers = [_StageSampler.of(stage, sampler, self.frames) for stage in [base, *self.super_resolution]]
        self.sampler_calls = 0  # batched sampling calls so far (the server's batching is measured by it)

    @classmethod
    def from_checkpoints(cls, base: str, super_resolution: Sequence[str] = (), **kwargs) -> "Simulator":
        return cls(load_stage(base), [load_stage(p) for p in super_resolution], **kwargs)

    # ------------------------------------------------------------------------------------------- sessions

    def new_session(self, observation: np.ndarray | None = None, seed: int | None = None) -> Session:
        """A session starting from an image [H, W, 3] or frames [n, H, W, 3] (uint8, any size; the last
        `history_frames` are used), or from white placeholder frames when `observation` is None (text-only)."""
        h, w = self.base_size
        history = np.zeros((self.history_frames, h, w, 3), np.uint8)
        mask = np.zeros((self.history_frames,), bool)
        if observation is None:
            history[:], mask[:] = 255, True
            first = np.full((1, *self.output_size, 3), 255, np.uint8)
        else:
            frames = np.asarray(observation)
            if frames.ndim == 3:
                frames = frames[None]
            if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not frames.shape[0]:
                raise ActionError(f"an initial observation is a uint8 image [H, W, 3] or frames [n, H, W, 3]; got "
                                  f"{frames.dtype} {list(frames.shape)}")
            frames = frames[-self.history_frames:] if self.history_frames else frames[-1:]
            if self.history_frames:
                history[self.history_frames - len(frames):] = images.resize(frames, (h, w))
                mask[self.history_frames - len(frames):] = True
            first = images.resize(frames[-1:], self.output_size)
        seed = next(self._seeds) if seed is None else int(seed)
        return Session(history, mask, seed, placeholder=observation is None, last_frames=first)

    def step_sessions(self, sessions: Sequence[Session], actions: Sequence[Action]) -> list[np.ndarray]:
        """Steps every session by its action in batches of at most `max_batch`; returns each one's new frames
        [frames, H, W, 3] uint8 and advances its history. Actions are checked before anything is sampled."""
        if len(sessions) != len(actions):
            raise ValueError(f"{len(sessions)} sessions but {len(actions)} actions")
        conditions = [self._encode_action(a) for a in actions]
        out = []
        for start in range(0, len(sessions), self.max_batch):
            out += self._step_batch(sessions[start:start + self.max_batch], conditions[start:start + self.max_batch])
        return out

    def close_session(self, session: Session) -> None:
        """Frees nothing locally (a session is plain arrays); the server's client frees server memory here."""

    def describe(self) -> dict:
        """What a client needs to build observations and actions: sizes, frames per step, control sources."""
        return {"frames_per_step": self.frames, "output_size": list(self.output_size),
                "base_size": list(self.base_size), "history_frames": self.history_frames,
                "controls": {name: {"names": list(stats.names), "low": list(stats.low), "high": list(stats.high)}
                             for name, stats in self.controls.items()},
                "text": self.base.description.text_encoder is not None,
                "sampler": dataclasses.asdict(self.sampler), "max_batch": self.max_batch,
                "stages": [{"path": s.path, "step": s.step, "stage": s.config.stage, "size": list(s.size)}
                           for s in [self.base, *self.super_resolution]]}

    # ------------------------------------------------------------------------------------ single session

    def reset(self, observation: np.ndarray | None = None, seed: int | None = None) -> np.ndarray:
        self._session = self.new_session(observation, seed)
        return self._session.last_frames

    def step(self, action: Action | str | None = None, *, text: str | None = None, controls=None,
             source: str | None = None) -> np.ndarray:
        if not hasattr(self, "_session"):
            raise RuntimeError("call reset() before step()")
        if isinstance(action, str):
            action = Action(text=action)
        action = action or Action(text=text, controls=controls, source=source)
        return self.step_sessions([self._session], [action])[0]

    def rollout(self, actions: Sequence[Action | str], observation: np.ndarray | None = None,
                seed: int | None = None) -> np.ndarray:
        """Takes every action in turn and returns the starting frame(s) and every generated frame, [n + len(actions)
        · frames, H, W, 3]. Starts from `observation` when given; otherwise continues the current session (or,
        with none yet, starts text-only from white frames)."""
        if observation is not None or not hasattr(self, "_session"):
            self.reset(observation, seed)
        frames = [self._session.last_frames]
        for action in actions:
            frames.append(self.step(action))
        return np.concatenate(frames)

    # ------------------------------------------------------------------------------------------ actions

    def check_action(self, action: Action) -> None:
        """Raises `ActionError` when `step_sessions` would refuse `action`; embeds (and caches) its text, so the step
        that follows does not. The server checks each request's action this way before batching it with others."""
        self._encode_action(action)

    def _encode_action(self, action: Action) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(text [L, d], text mask [L], control tokens [T, D], control mask [T, D])."""
        if not isinstance(action, Action):
            raise ActionError(f"an action is an Action(text=…, controls=…), not {type(action).__name__}")
        text = np.zeros((self.text_tokens, self.text_dim), np.float16)
        text_mask = np.zeros((self.text_tokens,), bool)
        tokens = np.zeros((self.frames, self.control_dims), np.int32)
        control_mask = np.zeros((self.frames, self.control_dims), bool)
        has_text = action.text is not None and action.text.strip() != ""
        if not has_text and action.controls is None:
            raise ActionError("an action needs text, controls or both")
        if has_text:
            embedding = self._embed(action.text)[: self.text_tokens]
            text[: len(embedding)], text_mask[: len(embedding)] = embedding, True
        if action.controls is not None:
            name = self._control_source(action.source)
            values = np.asarray(action.controls, np.float64)
            dims = self.controls[name].dims
            if values.ndim == 1:
                values = np.broadcast_to(values, (self.frames, values.shape[0]))
            if values.ndim != 2 or values.shape != (self.frames, dims):
                raise ActionError(f"controls for {name!r} are [{dims}] ({', '.join(self.controls[name].names)}) or "
                                  f"[{self.frames}, {dims}]; got shape {list(np.shape(action.controls))}")
            try:
                tokens[:, :dims] = self._tokenizers[name].encode(values)
            except ValueError as e:
                raise ActionError(str(e)) from None
            control_mask[:, :dims] = True
        return text, text_mask, tokens, control_mask

    def _control_source(self, source: str | None) -> str:
        if source is not None:
            if source not in self.controls:
                raise ActionError(f"no control statistics for source {source!r}; sources with controls: "
                                  f"{sorted(self.controls) or 'none'}")
            return source
        if len(self.controls) != 1:
            raise ActionError("this model was trained on " + (
                f"{len(self.controls)} sources with controls ({', '.join(sorted(self.controls))}): name one "
                "(Action.source)" if self.controls else "no source with controls: it takes text actions only"))
        return next(iter(self.controls))

    def _embed(self, text: str) -> np.ndarray:
        """The T5 embedding of `text` (float16 [tokens, d]); the last 1024 texts are cached. Thread-safe."""
        key = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
        with self._text_lock:
            if key in self._text_cache:
                self._text_cache.move_to_end(key)
                return self._text_cache[key]
            if self._encoder is None:
                self._encoder = self._load_encoder()
            # As the store gives it back (quantized the way the training data's store was), not the encoder's float32:
            # the model was trained on the stored embeddings.
            stored_dtype = self.base.description.text_encoder.stored_dtype
            embedding = stored(self._encoder.encode([""], [text])[0], stored_dtype).embedding
            self._text_cache[key] = embedding
            if len(self._text_cache) > 1024:
                self._text_cache.popitem(last=False)
            return embedding

    def _load_encoder(self):
        from unisim.encoders.t5 import T5TextEncoder, check_encoder

        recorded = self.base.description.text_encoder
        if not self._encoder_path or recorded is None:
            raise ActionError("this model was trained without a text encoder: it takes control actions only")
        if self._check_text_encoder:
            try:
                check_encoder(self._encoder_path, recorded, "the one the training data was embedded with")
            except EncoderMismatchError as e:
                raise ActionError(f"{e}; pass that one, or check_text_encoder=False to use it anyway") from None
        return T5TextEncoder(self._encoder_path, max_tokens=recorded.max_tokens)

    # ------------------------------------------------------------------------------------------ sampling

    def _step_batch(self, sessions: Sequence[Session], conditions) -> list[np.ndarray]:
        n, padded = len(sessions), _bucket(len(sessions), self.max_batch)
        pad = lambda rows: np.stack(list(rows) + [rows[0]] * (padded - n))  # noqa: E731
        history = pad([s.history for s in sessions])
        history_mask = pad([s.history_mask for s in sessions])
        text, text_mask, tokens, control_mask = (pad([c[i] for c in conditions]) for i in range(4))
        guidance = pad([np.float32(self.sampler.text_only_guidance if s.placeholder else self.sampler.guidance)
                        for s in sessions])
        keys = pad([np.asarray(jax.random.key_data(jax.random.fold_in(jax.random.PRNGKey(s.seed), s.steps)))
                    for s in sessions])
        cond = dict(text=text, text_mask=text_mask, controls=tokens, control_mask=control_mask)
        video = self._samplers[0](keys, guidance, history=history, history_mask=history_mask, lowres=None, **cond)
        base_frames = trainer_stage.to_uint8(video)
        for index, sampler in enumerate(self._samplers[1:], 1):
            stage_keys = np.stack([np.asarray(jax.random.key_data(jax.random.fold_in(jax.random.PRNGKey(s.seed),
                                                                                     (s.steps << 8) + index)))
                                   for s in sessions] + [keys[0]] * (padded - n))
            video = sampler(stage_keys, guidance, history=np.zeros((padded, 0, *sampler.stage.size, 3), np.uint8),
                            history_mask=np.zeros((padded, 0), bool), lowres=video, **cond)
        frames = trainer_stage.to_uint8(video)
        self.sampler_calls += 1
        out = []
        for i, session in enumerate(sessions):
            if self.history_frames:
                merged = np.concatenate([session.history[session.history_mask], base_frames[i]])
                session.history = merged[-self.history_frames:]
                session.history_mask = np.ones((self.history_frames,), bool)
            session.steps += 1
            session.placeholder = False
            session.last_frames = frames[i]
            out.append(frames[i])
        return out


class _StageSampler:
    """One stage's jitted sampler: keys, guidance and conditioning → samples [B, frames, h, w, 3] in [-1, 1].
    jax.jit compiles it once per batch size; without guidance anywhere in the batch the unguided model is called
    once per step instead of on the doubled batch."""

    @classmethod
    def of(cls, stage: Stage, sampler: SamplerSettings, frames: int) -> "_StageSampler":
        """The stage's sampler for these settings, made once (guidance is an input, not part of the key)."""
        key = (sampler.sampler, sampler.steps, sampler.gamma, frames)
        if key not in stage.samplers:
            stage.samplers[key] = cls(stage, sampler, frames)
        return stage.samplers[key]

    def __init__(self, stage: Stage, sampler: SamplerSettings, frames: int):
        self.stage = stage
        self._run = {guided: jax.jit(functools.partial(self._sample, stage.model, stage.config, sampler, frames,
                                                       guided))
                     for guided in (False, True)}

    def __call__(self, keys, guidance, **cond) -> jax.Array:
        guided = bool(np.any(guidance != 0))
        return self._run[guided](self.stage.params, keys, guidance, {k: None if v is None else jnp.asarray(v)
                                                                      for k, v in cond.items()})

    @staticmethod
    def _sample(model, config, sampler, frames, guided, params, keys, guidance, cond):
        keys = jax.random.wrap_key_data(keys)
        split = jax.vmap(lambda k: jax.random.split(k, 3))(keys)  # condition noise, initial noise, sampler noise
        b = keys.shape[0]
        conditioning = trainer_stage.conditioning(config, cond, jnp.zeros((b,), bool), split[:, 0], cond["lowres"])
        if guided:
            twice = jax.tree.map(lambda v: jnp.concatenate([v, v]), dataclasses.replace(conditioning, drop=None))
            denoise = diffusion.guided(lambda z, logsnr, drop: model.apply(
                params, z, logsnr, dataclasses.replace(twice, drop=drop)), guidance)
        else:
            denoise = lambda z, logsnr: model.apply(params, z, logsnr, conditioning)  # noqa: E731
        size = (config.input.height, config.input.width)
        noise = jax.vmap(lambda k: jax.random.normal(k, (frames, *size, 3)))(split[:, 1])
        bound = trainer_stage.sample_bound(config)
        prediction = diffusion.prediction_of(config)
        if sampler.sampler == "ancestral":
            x = diffusion.ancestral_sample(denoise, noise, split[:, 2], sampler.steps, sampler.gamma, prediction,
                                           bound)
        else:
            x = diffusion.ddim_sample(denoise, noise, sampler.steps, prediction, bound)
        return trainer_stage.finish_sample(config, x, cond["history"], cond["history_mask"], conditioning)
