"""The clip step of the convert pipeline (`MakeClips`): episodes → clip records with frames resized and encoded,
control rows for the statistics, and rejections with a reason code.

The costly part of a conversion (decoding and encoding frames), run on `pipelines.lanes` threads inside each
worker; with a resume folder it keeps each finished episode's outputs and gives kept ones back (`pipelines.resume`).
Wired into the whole conversion by `pipelines.transforms.build`.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from unisim.adapters.base import Episode, FrameUnavailable
from unisim.pipelines import clips as clip_planning
from unisim.pipelines import frames as frame_ops
from unisim.pipelines import resume, shards
from unisim.pipelines.config import ConvertConfig
from unisim.pipelines.lanes import OrderedLanes
from unisim.pipelines.progress import Progress
from unisim.schemas import record as rec
from unisim.schemas import text as text_rules
from unisim.schemas.controls import row_hashes
from unisim.schemas.dead_letter import Rejection

REJECTED = shards.REJECTED
CONTROL_ROWS = "control_rows"
_NAMESPACE = shards.NAMESPACE


@dataclasses.dataclass(frozen=True)
class _EpisodeDone:
    frames: int  # frames the episode encoded
    resumed: bool = False  # its outputs were kept by an earlier, unfinished run (`pipelines/resume.py`)


class _MakeClipsFn(beam.DoFn):
    def __init__(self, config: ConvertConfig, dataset_name: str, control_dims: int, requires_text: bool,
                 conditioning: text_rules.ConditioningSpec, threads: int,
                 kept: resume.EpisodeStore = resume.EpisodeStore()):
        self._config = config
        self._threads = threads
        self.kept = kept
        self._dataset_name = dataset_name
        self._control_dims = control_dims
        self._requires_text = requires_text
        self._conditioning = conditioning

    def setup(self):
        # One OpenCV thread per lane: runners already run one worker per core, and OpenCV's own thread pool on top
        # of that oversubscribes the cores (measured: 2 local workers were slower than 1 without this).
        frame_ops.cv2.setNumThreads(1)
        self.records = Metrics.counter(_NAMESPACE, "clips_made")
        self.frames = Metrics.counter(_NAMESPACE, "frames_encoded")
        self.rejected = Metrics.counter(_NAMESPACE, "rejected_clips")
        self.resumed = Metrics.counter(_NAMESPACE, "episodes_resumed")
        self.converted = Metrics.counter(_NAMESPACE, "episodes_converted")
        self.progress = Progress("convert")
        self.lanes = OrderedLanes(self._threads, self._episode_outputs)

    def process(self, episode: Episode):
        # Lazy video windows name their file, so windows of one video share a lane and its parked decoder.
        outputs = self.lanes.submit(episode, affinity=getattr(episode.frames, "decoder_key", None))
        yield from self._counted(outputs)

    def finish_bundle(self):
        # Outputs of items still in flight; finish_bundle must give windowed values (this pipeline is global-window).
        for value in self._counted(self.lanes.drain()):
            if isinstance(value, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(value.tag, GlobalWindows.windowed_value(value.value))
            else:
                yield GlobalWindows.windowed_value(value)

    def _counted(self, outputs):
        """Counts on the caller's thread: Beam's metrics are bound to it, not to the lanes."""
        for value in outputs:
            if isinstance(value, _EpisodeDone):
                (self.resumed if value.resumed else self.converted).inc()
                self.frames.inc(value.frames)
                self.progress.add(episodes=1, frames=value.frames)
                continue
            if isinstance(value, rec.ClipRecord):
                self.records.inc()
            elif isinstance(value, beam.pvalue.TaggedOutput) and value.tag == REJECTED:
                self.rejected.inc()
            yield value

    def _reject(self, episode: Episode, key: str, reason: str, detail: str):
        return beam.pvalue.TaggedOutput(REJECTED, Rejection(self._dataset_name, key, reason, detail,
                                                            episode.source_file, episode.source_index))

    def _episode_outputs(self, episode: Episode):
        """Everything one episode gives, ending with an `_EpisodeDone`; runs on a lane. With a resume folder, an
        episode an earlier run finished gives its kept outputs, and one made here is kept once it is complete."""
        try:
            kept = self.kept.get(episode.episode_id)
            if kept is not None:
                for tag, value in kept:
                    yield value if tag is None else beam.pvalue.TaggedOutput(tag, value)
                yield _EpisodeDone(0, resumed=True)
                return
            if self.kept.folder is None:
                yield from self._clips(episode)
                return
            outputs = list(self._clips(episode))  # the episode's clips, rejections and rows, then _EpisodeDone
            self.kept.put(episode.episode_id, [(v.tag, v.value) if isinstance(v, beam.pvalue.TaggedOutput)
                                               else (None, v) for v in outputs[:-1]])
            yield from outputs
        finally:  # lazy frames (a video window) may hand their decoder on to the next episode of the same video
            finished = getattr(episode.frames, "finished", None)
            if finished is not None:
                finished()

    def _clips(self, episode: Episode):
        c = self._config
        try:
            text = text_rules.normalize_text(episode.text, self._conditioning.max_text_chars)
        except text_rules.TextError as e:
            yield self._reject(episode, episode.episode_id, e.reason, str(e))
            return
        if self._requires_text and not text:
            yield self._reject(episode, episode.episode_id, "empty_text", "the episode's text action is empty")
            return
        controls = np.asarray(episode.controls, np.float32)
        if controls.shape != (len(episode.frames), self._control_dims):
            yield self._reject(episode, episode.episode_id, "malformed_controls",
                               f"controls have shape {list(controls.shape)}, expected "
                               f"[{len(episode.frames)}, {self._control_dims}]")
            return
        try:
            plans, fps = self._plan(episode)
        except ValueError as e:
            yield self._reject(episode, episode.episode_id, "span_out_of_range", str(e))
            return
        kept = np.concatenate([plan.frame_indices for plan in plans]) if plans else np.zeros(0, np.int32)
        if self._control_dims:
            yield beam.pvalue.TaggedOutput(CONTROL_ROWS, self._sample_rows(episode.episode_id, kept, controls))
        encoded: dict[int, bytes | frame_ops.FrameError | FrameUnavailable] = {}
        frames_done = 0
        for plan in plans:
            key = rec.clip_key(episode.episode_id, plan.clip_index)
            indices = [int(i) for i in plan.frame_indices]
            # Clips only overlap their predecessor: anything this clip does not use is never needed again.
            needed = set(indices)
            encoded = {i: v for i, v in encoded.items() if i in needed}
            clip_controls = controls[indices]
            if not np.isfinite(clip_controls).all():
                bad = sorted({indices[t] for t in np.nonzero(~np.isfinite(clip_controls).all(axis=1))[0]})
                yield self._reject(episode, key, "non_finite_control",
                                   f"NaN or infinite control at source frames {bad}")
                continue
            for i in indices:
                if i not in encoded:
                    try:
                        encoded[i] = frame_ops.process(episode.frames[i], c.frame)
                        frames_done += 1
                    except (frame_ops.FrameError, FrameUnavailable) as e:  # both carry a reason code
                        encoded[i] = e
                if isinstance(encoded[i], Exception):
                    break  # the clip is lost: decoding on (a video cut short would reopen per frame) buys nothing
            errors = [(i, encoded[i]) for i in indices if isinstance(encoded.get(i), Exception)]
            if errors:
                index, error = errors[0]
                yield self._reject(episode, key, error.reason, f"source frame {index}: {error}")
                continue
            clip_frames = [encoded[i] for i in indices]
            yield rec.ClipRecord(
                dataset=self._dataset_name, episode_id=episode.episode_id, clip_index=plan.clip_index,
                frames=clip_frames, image_format=c.frame.image_format, height=c.frame.height,
                width=c.frame.width, fps=float(fps), context_frames=plan.context_frames, text=text,
                controls=clip_controls, control_tokens=np.zeros(clip_controls.shape, np.uint16),
                conditioning_text=text_rules.conditioning_text(self._conditioning, text, clip_controls,
                                                               plan.context_frames),
                frame_indices=plan.frame_indices, is_image=episode.is_image, split=episode.split,
                source_file=episode.source_file, source_index=episode.source_index)
        yield _EpisodeDone(frames_done)

    def _plan(self, episode: Episode) -> tuple[list[clip_planning.ClipPlan], float]:
        """The episode's clips and their frame rate: successive clips, or the one clip of an annotated span."""
        c = self._config
        if episode.span is None:
            kept = clip_planning.resample_indices(len(episode.frames), episode.fps, c.fps)
            return clip_planning.plan_clips(kept, c.frames_per_clip, c.context_frames), c.fps or episode.fps
        plan, fps = clip_planning.plan_span_clip(len(episode.frames), episode.fps, episode.span, c.fps,
                                                 c.frames_per_clip, c.context_frames, c.fit_spans)
        return [plan], fps

    def _sample_rows(self, episode_id: str, kept: np.ndarray, controls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row hashes, rows): the kept frames' controls, each source row once, thinned by the hash when sampling."""
        rows = np.unique(kept)
        hashes = row_hashes(episode_id, rows)
        rate = self._config.stats_sample_rate
        if rate < 1:
            keep = hashes < np.uint64(min(rate * 2.0**64, 2.0**64 - 2048))  # below 2^64 after float rounding
            rows, hashes = rows[keep], hashes[keep]
        return hashes, controls[rows]

    def teardown(self):
        if getattr(self, "lanes", None):
            self.lanes.close()
        if getattr(self, "progress", None) and self.progress.counts:
            self.progress.report()


class MakeClips(beam.PTransform):
    """Episodes → clip records with frames resized and encoded (tokens not yet set), control rows, rejections."""

    def __init__(self, config: ConvertConfig, dataset_name: str, control_dims: int, requires_text: bool,
                 conditioning: text_rules.ConditioningSpec, threads: int = 1,
                 kept: resume.EpisodeStore = resume.EpisodeStore()):
        super().__init__()
        self._fn = _MakeClipsFn(config, dataset_name, control_dims, requires_text, conditioning, threads, kept)

    def expand(self, episodes):
        return episodes | "Clip" >> beam.ParDo(self._fn).with_outputs(REJECTED, CONTROL_ROWS, main="clips")
