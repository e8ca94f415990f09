"""What every transport of the simulator server and its client agree on, defined once: the errors, the array wire
codec, how a client is named for its quotas, and the limits a request meets (with the checks that enforce them).

The limits a hostile client meets are here, so that every transport (HTTP/JSON in serving/http.py, dm_env_rpc over
gRPC in serving/rpc.py, the playground page) enforces the same ones: texts over MAX_TEXT_CHARS, observation frames
over MAX_OBSERVATION_PIXELS (an encoded image is measured from its header, before decoding), seeds outside
[0, 2**32); the session pool (serving/sessions.py) adds max_sessions in all and max_sessions_per_client for one
client (named by `client_identity`).

Errors are `ServerError(status, message)` with an HTTP status as the kind (400 bad input, 404 unknown session, 409
already stepping, 429 this client's quota, 503 full or shutting down, 500 sampling failed); the gRPC front end maps
them onto gRPC codes, and the client raises them with the server's message.

Arrays travel as {"shape", "dtype", "data": base64 of the raw uint8 bytes} (`encode_array` / `decode_array`).
"""

from __future__ import annotations

import base64
import math
import threading

import numpy as np

from unisim.fileio import images
from unisim.schemas.text import MAX_TEXT_CHARS  # a text action: what `unisim convert` accepts; longer refused
from unisim.simulator.core import Action
# Errors and client names are web.py's (the HTTP server below every page of ours, without JAX); re-exported here so
# that every transport finds the whole protocol in one module.
from unisim.simulator.serving.web import CLIENT_TOKEN_CHARS, CLIENT_TOKEN_KEY, ServerError, client_identity

__all__ = ["CLIENT_TOKEN_CHARS", "CLIENT_TOKEN_KEY", "MAX_OBSERVATION_PIXELS", "MAX_TEXT_CHARS", "SEED_LIMIT",
           "ServerError", "check_observation", "check_seed", "client_identity", "decode_array", "decode_image",
           "encode_array", "make_action"]


# ------------------------------------------------------------------------------------------------ wire format

def encode_array(a: np.ndarray) -> dict:
    a = np.ascontiguousarray(a)
    return {"shape": list(a.shape), "dtype": str(a.dtype), "data": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(obj) -> np.ndarray:
    """An ARRAY object → a uint8 ndarray; ValueError says what is wrong with it."""
    if not isinstance(obj, dict) or set(obj) != {"shape", "dtype", "data"}:
        raise ValueError('an array is {"shape": [...], "dtype": "uint8", "data": base64}')
    shape, dtype, data = obj["shape"], obj["dtype"], obj["data"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise ValueError(f"an array's shape is a list of non-negative integers, not {shape!r}")
    if dtype != "uint8":
        raise ValueError(f"arrays are uint8, not {dtype!r}")
    try:
        raw = base64.b64decode(data, validate=True)
    except (TypeError, ValueError):
        raise ValueError("an array's data is not valid base64") from None
    if len(raw) != math.prod(shape):
        raise ValueError(f"{len(raw)} bytes of data for shape {shape} ({math.prod(shape)} expected)")
    return np.frombuffer(raw, np.uint8).reshape(shape).copy()  # a writable copy


# ------------------------------------------------------------------------------------------- checked inputs

SEED_LIMIT = 2 ** 32  # JAX keys (without x64) keep 32 bits of a seed: larger ones would silently collide
# The largest frame a client may send as an observation (an image file, or one frame of an array): it bounds the
# memory one request makes the server allocate (a 4096 × 4096 RGB frame is 48 MiB decoded). Checked in the header
# before decoding; frames are resized to the model's size anyway, so larger ones would add nothing.
MAX_OBSERVATION_PIXELS = 4096 * 4096
_DECODING = threading.BoundedSemaphore(2)  # image observations decoded at once: memory is bounded by 2 × the limit


def decode_image(data: bytes | str) -> np.ndarray:
    """A PNG/JPEG file's bytes (or their base64) → uint8 RGB [H, W, 3], its size checked in the header first."""
    import cv2

    try:
        if isinstance(data, str):
            data = base64.b64decode(data, validate=True)
        if not isinstance(data, bytes):
            raise TypeError(f"an image is the bytes of a PNG or JPEG file, not {type(data).__name__}")
        images.check(data, MAX_OBSERVATION_PIXELS)  # the header's size, before anything is decoded
        with _DECODING:
            return images.decode(data, cv2.IMREAD_COLOR_RGB, MAX_OBSERVATION_PIXELS)
    except (ValueError, TypeError) as e:  # binascii.Error and ImageError are ValueErrors
        raise ServerError(400, f"observation image: {e}") from None


def check_observation(frames: np.ndarray) -> np.ndarray:
    """An initial observation: uint8 [H, W, 3] or [n, H, W, 3] with pixels, within MAX_OBSERVATION_PIXELS a frame."""
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or frames.shape[-1] != 3 or 0 in frames.shape:
        raise ServerError(400, "an initial observation is a uint8 image [H, W, 3] or frames [n, H, W, 3] with pixels; "
                               f"got {frames.dtype} {list(frames.shape)}")
    if frames.shape[-3] * frames.shape[-2] > MAX_OBSERVATION_PIXELS:
        raise ServerError(400, f"observation frames of {frames.shape[-2]}×{frames.shape[-3]} are over "
                               f"{MAX_OBSERVATION_PIXELS:,} pixels")
    return frames


def check_seed(seed) -> int | None:
    if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool)
                             or not 0 <= seed < SEED_LIMIT):
        raise ServerError(400, f"seed must be an integer in [0, 2**32), not {seed!r}")
    return None if seed is None else int(seed)


def make_action(text=None, controls=None, source=None) -> Action:
    """An `Action` from a client's values, their types and sizes checked (shape and range are the simulator's)."""
    if text is not None and not isinstance(text, str):
        raise ServerError(400, f"text must be a string, not {type(text).__name__}")
    if text is not None and len(text) > MAX_TEXT_CHARS:
        raise ServerError(400, f"text of {len(text):,} characters is over {MAX_TEXT_CHARS:,}")
    if source is not None and not isinstance(source, str):
        raise ServerError(400, f"source must be a string, not {type(source).__name__}")
    if controls is not None:
        try:
            controls = np.asarray(controls)
        except ValueError:  # ragged
            controls = None
        if controls is None or controls.dtype.kind not in "iuf":  # not strings, booleans or nested objects
            raise ServerError(400, "controls must be a [D] or [frames, D] list of numbers")
        controls = controls.astype(np.float64)
    return Action(text=text, controls=controls, source=source)
