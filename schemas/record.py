"""The one record every dataset becomes: a clip of encoded frames with its action, and its byte codec.

Wire format (schema version 2), one ArrayRecord entry per clip, readable with numpy + an image decoder only:

    b"USR1"                         4-byte magic
    u32 little-endian               header length N
    N bytes                         header: UTF-8 JSON object (sorted keys, compact), see below
    payload                         the bytes that the header's (offset, size) pairs point into

The header holds every scalar field of `ClipRecord` by name, plus "key" (the clip key), "text_key" (the key of
`conditioning_text` in the output's text-embedding store, "" when there is no text to condition on), and
    "arrays": {name: {"dtype": numpy dtype string, "shape": [...], "offset": int, "size": int}}
               for `controls` (float32 [T, D]), `control_tokens` (uint16 [T, D]) and `frame_indices` (int32 [T])
    "frames":  [[offset, size], ...], one encoded image (JPEG or PNG, `image_format`) per frame.
Offsets are relative to the start of the payload. Decoding a frame is `cv2.imdecode(payload[offset:offset+size])`.

Keys are sorted and no clock time is stored, so the same clip always serialises to the same bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import struct

import numpy as np

SCHEMA_VERSION = 2  # 2: conditioning_text + 128-bit text keys into the text-embedding store
MAGIC = b"USR1"
NUM_CONTROL_BINS = 4096
IMAGE_FORMATS = ("jpeg", "png")
_IMAGE_MAGIC = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n"}
_ARRAY_DTYPES = {"controls": np.float32, "control_tokens": np.uint16, "frame_indices": np.int32}


class RecordError(ValueError):
    """A record is malformed. `field` names the offending field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def text_key(text: str) -> str:
    """Content key of a conditioning text in the text-embedding store; "" for no text.

    128 bits of SHA-256: at LAION scale (billions of unique captions) a 64-bit key would likely collide.
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32] if text else ""


def clip_key(episode_id: str, clip_index: int) -> str:
    """The stable source key of a clip: the same episode and clip index give the same key on every run."""
    return f"{episode_id}/{clip_index:05d}"


@dataclasses.dataclass
class ClipRecord:
    """A clip: `context_frames` leading history frames, then the frames to predict, all at `fps`.

    `controls[t]` is the per-frame continuous control as read from the source (float32, D dims, D may be 0) and
    `control_tokens[t]` its 4096-bin tokens under the dataset's statistics (see `schemas.controls`).
    `is_image` marks single-image examples (e.g. LAION), stored as one-frame clips.
    `text` is the language action as read (normalised, see `schemas.text`); `conditioning_text` is the exact
    string that was embedded (domain prefix + text + controls as text), found in the embedding store under
    `text_key`.
    """

    dataset: str
    episode_id: str
    clip_index: int
    frames: list[bytes]
    image_format: str
    height: int
    width: int
    fps: float
    context_frames: int
    text: str
    conditioning_text: str
    controls: np.ndarray
    control_tokens: np.ndarray
    frame_indices: np.ndarray
    is_image: bool = False
    split: str = "train"
    source_file: str = ""
    source_index: int = -1
    schema_version: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        return clip_key(self.episode_id, self.clip_index)

    @property
    def text_key(self) -> str:
        return text_key(self.conditioning_text)

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def target_frames(self) -> int:
        return len(self.frames) - self.context_frames


_SCALAR_FIELDS = tuple(f.name for f in dataclasses.fields(ClipRecord)
                       if f.name not in _ARRAY_DTYPES and f.name != "frames")


def encode(record: ClipRecord) -> bytes:
    """Serialises a validated record (raises `RecordError` naming the first bad field)."""
    validate(record)
    header: dict = {name: getattr(record, name) for name in _SCALAR_FIELDS}
    header["fps"] = float(record.fps)
    header["key"] = record.key
    header["text_key"] = record.text_key
    chunks: list[bytes] = []
    offset = 0
    arrays = {}
    for name, dtype in _ARRAY_DTYPES.items():
        data = np.ascontiguousarray(getattr(record, name), dtype=dtype).astype(np.dtype(dtype).newbyteorder("<"))
        raw = data.tobytes()
        arrays[name] = {"dtype": data.dtype.str, "shape": list(data.shape), "offset": offset, "size": len(raw)}
        chunks.append(raw)
        offset += len(raw)
    frames = []
    for frame in record.frames:
        frames.append([offset, len(frame)])
        chunks.append(bytes(frame))
        offset += len(frame)
    header["arrays"] = arrays
    header["frames"] = frames
    head = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return b"".join([MAGIC, struct.pack("<I", len(head)), head, *chunks])


def decode(data: bytes, validate_record: bool = True) -> ClipRecord:
    """Parses bytes written by `encode`. Frames stay encoded; see `decode_frames`."""
    view = memoryview(data)
    if bytes(view[:4]) != MAGIC:
        raise RecordError("magic", f"not a UniSim record (starts with {bytes(view[:4])!r}, expected {MAGIC!r})")
    if len(view) < 8:
        raise RecordError("header", "record truncated before the header length")
    (head_len,) = struct.unpack("<I", view[4:8])
    try:
        header = json.loads(bytes(view[8 : 8 + head_len]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RecordError("header", f"unreadable header: {e}") from None
    version = header.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RecordError("schema_version", f"record has schema version {version}, this code reads {SCHEMA_VERSION}")
    payload = view[8 + head_len :]

    def take(offset: int, size: int, field: str) -> memoryview:
        if offset < 0 or size < 0 or offset + size > len(payload):
            raise RecordError(field, f"byte range [{offset}, {offset + size}) outside the {len(payload)}-byte payload")
        return payload[offset : offset + size]

    values = {name: header[name] for name in _SCALAR_FIELDS if name in header}
    missing = [name for name in _SCALAR_FIELDS if name not in header]
    if missing:
        raise RecordError(missing[0], "missing from the record header")
    if not isinstance(header.get("arrays"), dict) or not isinstance(header.get("frames"), list):
        raise RecordError("header", "record header lacks its 'arrays' or 'frames' table")
    for name in _ARRAY_DTYPES:
        spec = header["arrays"].get(name)
        if spec is None:
            raise RecordError(name, "missing from the record header")
        raw = take(spec["offset"], spec["size"], name)
        try:
            values[name] = np.frombuffer(raw, dtype=np.dtype(spec["dtype"])).reshape(spec["shape"])
        except ValueError as e:
            raise RecordError(name, f"bytes do not match dtype {spec['dtype']} and shape {spec['shape']}: "
                                    f"{e}") from None
    values["frames"] = [bytes(take(off, size, "frames")) for off, size in header["frames"]]
    record = ClipRecord(**values)
    if validate_record:
        validate(record)
        if header.get("key") != record.key:
            raise RecordError("key", f"stored key {header.get('key')!r} does not match {record.key!r}")
        if header.get("text_key") != record.text_key:
            raise RecordError("text_key", f"stored text key {header.get('text_key')!r} does not match the "
                                          "conditioning text")
    return record


def decode_frames(record: ClipRecord) -> np.ndarray:
    """Decodes all frames to uint8 RGB [T, H, W, 3] with OpenCV (no TensorFlow)."""
    import cv2  # imported here so that record parsing works without OpenCV

    out = np.empty((record.num_frames, record.height, record.width, 3), np.uint8)
    for i, frame in enumerate(record.frames):
        bgr = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None or bgr.shape[:2] != (record.height, record.width):
            raise RecordError("frames", f"frame {i} does not decode to {record.height}x{record.width}")
        cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=out[i])
    return out


def validate(record: ClipRecord) -> None:
    """Raises `RecordError` naming the first field that breaks the schema."""

    def require(ok: bool, field: str, message: str) -> None:
        if not ok:
            raise RecordError(field, message)

    require(record.schema_version == SCHEMA_VERSION, "schema_version", f"must be {SCHEMA_VERSION}")
    for name in ("dataset", "episode_id", "split"):
        value = getattr(record, name)
        require(isinstance(value, str) and value != "", name, "must be a non-empty string")
    require("/" not in record.dataset, "dataset", "must not contain '/'")
    require(isinstance(record.clip_index, int) and record.clip_index >= 0, "clip_index", "must be an int >= 0")
    require(isinstance(record.text, str), "text", "must be a string")
    require(isinstance(record.conditioning_text, str), "conditioning_text", "must be a string")
    require(isinstance(record.source_file, str), "source_file", "must be a string")
    require(isinstance(record.source_index, int), "source_index", "must be an int")
    require(record.image_format in IMAGE_FORMATS, "image_format", f"must be one of {IMAGE_FORMATS}")
    require(isinstance(record.height, int) and record.height > 0, "height", "must be a positive int")
    require(isinstance(record.width, int) and record.width > 0, "width", "must be a positive int")
    fps = record.fps
    require(isinstance(fps, (int, float)) and math.isfinite(fps) and fps >= 0, "fps", "must be a finite number >= 0")
    n = len(record.frames)
    require(n > 0, "frames", "a record needs at least one frame")
    signature = _IMAGE_MAGIC.get(record.image_format, b"")
    for i, frame in enumerate(record.frames):
        require(isinstance(frame, (bytes, bytearray)) and bytes(frame[: len(signature)]) == signature, "frames",
                f"frame {i} is not {record.image_format}-encoded bytes")
    require(isinstance(record.context_frames, int) and 0 <= record.context_frames < n, "context_frames",
            f"must be an int in [0, {n}) for {n} frames")
    require(isinstance(record.is_image, bool), "is_image", "must be a bool")
    if record.is_image:
        require(n == 1, "is_image", f"single-image records hold exactly one frame, not {n}")
    else:
        require(fps > 0, "fps", "video records need fps > 0")
    controls = np.asarray(record.controls)
    require(controls.ndim == 2 and controls.shape[0] == n, "controls",
            f"must have shape [{n}, D], got {controls.shape}")
    require(controls.dtype == np.float32, "controls", f"must be float32, got {controls.dtype}")
    require(bool(np.isfinite(controls).all()), "controls", "contains NaN or infinite values")
    tokens = np.asarray(record.control_tokens)
    require(tokens.shape == controls.shape, "control_tokens",
            f"shape {tokens.shape} differs from controls {controls.shape}")
    require(tokens.dtype == np.uint16, "control_tokens", f"must be uint16, got {tokens.dtype}")
    require(tokens.size == 0 or int(tokens.max()) < NUM_CONTROL_BINS, "control_tokens",
            f"tokens must be < {NUM_CONTROL_BINS}")
    indices = np.asarray(record.frame_indices)
    require(indices.shape == (n,) and indices.dtype == np.int32, "frame_indices", f"must be int32 [{n}]")
    require(bool((np.diff(indices) >= 0).all()), "frame_indices", "must be non-decreasing")
