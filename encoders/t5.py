"""The T5 text encoder: a transformers checkpoint (local, gs:// or any `unisim.fileio` path) → token embeddings.

Used by the converter (`pipelines/embed.py`) and by the simulator, which embeds a user's text the same way.

A checkpoint is a flat directory in transformers format: `config.json`, the weights (`model.safetensors`, or
shards plus their index, or `pytorch_model.bin`) and the tokenizer files (`spiece.model` and/or `tokenizer.json`,
`tokenizer_config.json`). For real runs that is the encoder of T5-XXL as in the paper, e.g. saved once with
`T5EncoderModel.from_pretrained("google/t5-v1_1-xxl").save_pretrained(DIR)` (plus the tokenizer) and copied to
gs://. Loading never touches the network (`local_files_only=True`); remote checkpoints are copied to local
scratch first, once per worker process.

The *identity* of an encoder (recorded in the manifest, compared by `schemas.text_embeddings.check_same_encoder`):
the checkpoint path, SHA-256 of its config (minus fields that only name the saving software), SHA-256 of its
vocabulary as the tokenizer loads it (token → id, so the same vocabulary in another file format matches), and the
weight files' names and sizes. The fingerprint hashes all but the path.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
import threading
from typing import Any

import numpy as np

from unisim import fileio
from unisim.schemas.text_embeddings import (EMBEDDING_DTYPE, STORED_DTYPE, EncoderIdentity, EncoderMismatchError,
                                             TextEmbedding)

CONFIG_NAME = "config.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt")
_VOLATILE_CONFIG_KEYS = ("transformers_version", "_name_or_path")
_FP16_MAX = float(np.finfo(np.float16).max)
_local_copies: dict[tuple[str, bool], str] = {}
_copy_lock = threading.Lock()


def _is_weight_file(name: str) -> bool:
    return name.endswith(WEIGHT_SUFFIXES) and not name.endswith(".index.json")


def _list_checkpoint(path: str) -> list[tuple[str, int]]:
    """(file name, bytes) of the checkpoint's files, sorted; glob, not listdir: object stores have no directories."""
    path = path.rstrip("/")
    files = sorted((fileio.basename(p), fileio.size(p)) for p in fileio.glob(fileio.join(path, "*"))
                   if not fileio.isdir(p))
    names = {name for name, _ in files}
    if CONFIG_NAME not in names:
        raise FileNotFoundError(f"text encoder {path} has no {CONFIG_NAME}: not a transformers checkpoint directory")
    if not any(_is_weight_file(n) for n in names):
        raise FileNotFoundError(f"text encoder {path} has no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    if not names & {"spiece.model", "tokenizer.json"}:
        raise FileNotFoundError(f"text encoder {path} has no tokenizer (spiece.model or tokenizer.json)")
    return files


def local_checkpoint(path: str, with_weights: bool = True) -> str:
    """A local directory holding the checkpoint (its weights only if `with_weights`); copies remote ones once."""
    if not fileio.is_remote(path):
        _list_checkpoint(path)  # the same clear errors for local paths
        return path
    cache_key = (path.rstrip("/"), with_weights)
    with _copy_lock:
        if cache_key in _local_copies and os.path.isdir(_local_copies[cache_key]):
            return _local_copies[cache_key]
        scratch = tempfile.mkdtemp(prefix="unisim-t5-")
        atexit.register(shutil.rmtree, scratch, True)  # a T5-XXL copy is ~19 GB: do not leave it in /tmp
        for name, _ in _list_checkpoint(path):
            if _is_weight_file(name) and not with_weights:
                continue
            fileio.fetch(fileio.join(path.rstrip("/"), name), os.path.join(scratch, name))
        _local_copies[cache_key] = scratch
        return scratch


_SENTENCEPIECE_FILES = ("spiece.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


def _load_tokenizer(local_dir: str):
    """The checkpoint's tokenizer, built from `spiece.model` when there is one.

    The sentencepiece model is the source of truth: transformers 5 writes a `tokenizer.json` for a converted
    unigram vocabulary that splits every word into characters (measured: "push" → ▁ p u s h after a
    save/load round trip), so a checkpoint re-saved with it carries a broken `tokenizer.json` beside a good
    `spiece.model`. Only checkpoints without `spiece.model` load `tokenizer.json`.
    """
    from transformers import T5Tokenizer

    if os.path.exists(os.path.join(local_dir, "spiece.model")):
        tokenizer_dir = tempfile.mkdtemp(prefix="unisim-t5-tokenizer-")
        for name in _SENTENCEPIECE_FILES:
            if os.path.exists(os.path.join(local_dir, name)):
                shutil.copy(os.path.join(local_dir, name), tokenizer_dir)
        try:
            # from_pretrained on a directory: in transformers 5, T5Tokenizer(vocab_file=…) silently ignores the file.
            return T5Tokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        finally:
            shutil.rmtree(tokenizer_dir, ignore_errors=True)
    return T5Tokenizer.from_pretrained(local_dir, local_files_only=True)


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                          .encode("utf-8")).hexdigest()


def encoder_identity(path: str, max_tokens: int) -> EncoderIdentity:
    """The identity recorded in the manifest (see the module docstring). Reads config and tokenizer, not weights."""
    files = _list_checkpoint(path)
    local = local_checkpoint(path, with_weights=False)
    with open(os.path.join(local, CONFIG_NAME), encoding="utf-8") as f:
        config = json.load(f)
    stable_config = {k: v for k, v in config.items() if k not in _VOLATILE_CONFIG_KEYS}
    tokenizer = _load_tokenizer(local)
    weights = [[name, size] for name, size in files if _is_weight_file(name)]
    identity = {
        "config_sha256": _sha256_json(stable_config),
        "vocab_sha256": _sha256_json(sorted(tokenizer.get_vocab().items())),
        "weights": weights,
    }
    return EncoderIdentity(fingerprint=_sha256_json(identity), path=path, model_type=config.get("model_type", ""),
                           d_model=int(config["d_model"]), vocab_size=len(tokenizer), max_tokens=int(max_tokens),
                           dtype=EMBEDDING_DTYPE.name, stored_dtype=STORED_DTYPE,
                           config_sha256=identity["config_sha256"], vocab_sha256=identity["vocab_sha256"],
                           weights=tuple((name, int(size)) for name, size in weights))


def check_encoder(path: str, recorded: EncoderIdentity, recorded_as: str) -> EncoderIdentity:
    """The identity of the encoder at `path`, after checking that it is the `recorded` one (the one fingerprint
    check: the converter's workers against the launcher's encoder, the simulator against its training data's).
    `recorded_as` names where `recorded` comes from in the error, e.g. "the one the training data was embedded
    with". Raises `EncoderMismatchError`."""
    found = encoder_identity(path, recorded.max_tokens)
    if not found.same_as(recorded):
        raise EncoderMismatchError(f"the text encoder at {path} (fingerprint {found.fingerprint[:12]}) is not "
                                   f"{recorded_as} ({recorded.path}, fingerprint {recorded.fingerprint[:12]})")
    return found


class T5TextEncoder:
    """Loads a T5 encoder once and embeds batches of texts. Not thread-safe; share one per process (Beam `Shared`)."""

    def __init__(self, path: str, max_tokens: int = 64, device: str = "cpu", threads: int | None = None):
        import torch
        from transformers import T5EncoderModel

        if threads:
            torch.set_num_threads(threads)
        local = local_checkpoint(path, with_weights=True)
        self.path, self.max_tokens, self.device = path, max_tokens, device
        self.tokenizer = _load_tokenizer(local)
        self.model = T5EncoderModel.from_pretrained(local, local_files_only=True).to(device).eval()
        self.d_model = int(self.model.config.d_model)

    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids per text (EOS last), cut to `max_tokens` keeping EOS; and whether each was cut."""
        ids = self.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        eos = self.tokenizer.eos_token_id
        out, truncated = [], []
        for seq in ids:
            cut = len(seq) > self.max_tokens
            out.append(seq[: self.max_tokens - 1] + [eos] if cut else list(seq))
            truncated.append(cut)
        return out, truncated

    def encode(self, keys: list[str], texts: list[str]) -> list[TextEmbedding]:
        """One padded forward pass over `texts`; returns each text's real-token embeddings as float32, clipped to
        float16's range (counted in `values_clipped`). Not rounded further: `encode_entry` quantizes them once for
        the store, and `schemas.text_embeddings.stored` gives what a reader of the store would get."""
        import torch

        ids, truncated = self.tokenize(texts)
        length = max(len(seq) for seq in ids)
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.tensor([seq + [pad_id] * (length - len(seq)) for seq in ids], dtype=torch.long)
        mask = torch.tensor([[1] * len(seq) + [0] * (length - len(seq)) for seq in ids], dtype=torch.long)
        with torch.inference_mode():
            hidden = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device))
            hidden = hidden.last_hidden_state.float().cpu().numpy()
        out = []
        for i, (key, text, seq) in enumerate(zip(keys, texts, ids)):
            values = hidden[i, : len(seq)]
            outside = int(np.count_nonzero(np.abs(values) > _FP16_MAX))  # NaN is not clipped: encode_entry refuses it
            if outside:
                values = np.clip(values, -_FP16_MAX, _FP16_MAX)
            out.append(TextEmbedding(key, text, np.ascontiguousarray(values, np.float32), np.asarray(seq, np.int32),
                                     truncated[i], outside))
        return out
