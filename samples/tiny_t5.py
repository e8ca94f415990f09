"""A tiny, randomly initialised T5 encoder checkpoint in transformers format, for tests and the demo.

Pretrained T5 weights cannot be downloaded where this project is built and tested, so tests and `make demo` embed
with this stand-in: the same files a real checkpoint has (`config.json`, `model.safetensors`, `spiece.model`,
`tokenizer_config.json`), loaded by the same code, but with a sentencepiece vocabulary trained
here on a small corpus and random weights. Its embeddings carry no language knowledge. Real runs need a real
checkpoint, e.g. the encoder of `google/t5-v1_1-xxl` saved with `save_pretrained` (see the README).

Everything is deterministic: the same corpus, sizes and seed give byte-identical files.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable

# Characters and words the pipeline's own conditioning texts use (domain prefixes, controls as text), so that
# they tokenize into pieces rather than <unk>.
BASE_CORPUS = [
    "controls: 0.01 -0.02, 0.03 0.00, -0.15 0.27, 1.50 -4.75, 0.68 0.49, 9.99 -0.83",
    "language_table: push the block to the left. language_table_tabletop_sim: move the arm up, down, right",
    "the a of to and in on with from into towards near pick place open close turn left right forward stop",
    "0 1 2 3 4 5 6 7 8 9 , . ; : - _ ' ! ? ( ) / #",
    # Rounded control values, so that numbers become a few pieces each as with a real T5 vocabulary.
    *(" ".join(f"{(i * 7 + j) % 400 / 100 - 2:.2f}" for j in range(0, 400, 37)) for i in range(200)),
]


def train_vocabulary(texts: Iterable[str], vocab_size: int) -> bytes:
    """A T5-style sentencepiece unigram model (pad 0, EOS 1, unk 2, no BOS) trained on `texts`; its bytes.

    Each distinct sentence is given once, sorted: sentencepiece 0.2.2's unigram trainer was seen to hang on some
    corpora that repeat sentences many times (e.g. a caption set repeated 20× beside a repeated numbers line).
    """
    import sentencepiece as spm

    texts = sorted(set(texts))
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(texts)), model_writer=model, vocab_size=vocab_size, model_type="unigram",
        character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1, minloglevel=2,
        hard_vocab_limit=False)  # a small corpus may not fill vocab_size pieces
    return model.getvalue()


def write_tiny_t5(output_dir: str, corpus: Iterable[str] = (), vocab_size: int = 1024, d_model: int = 32,
                  num_layers: int = 2, num_heads: int = 4, d_ff: int = 64, seed: int = 0,
                  d_kv: int | None = None) -> str:
    """Writes the checkpoint to `output_dir` (created) and returns it. `d_kv` (default d_model / num_heads) can be
    set smaller to make a wide model cheap to build (bench/embedding_store.py: d_model 4096)."""
    import torch
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "spiece.model"), "wb") as f:
        f.write(train_vocabulary([*BASE_CORPUS, *corpus], vocab_size))
    # from_pretrained on the directory: T5Tokenizer(vocab_file=…) silently ignores the file in transformers 5.
    tokenizer = T5Tokenizer.from_pretrained(output_dir, local_files_only=True)
    tokenizer.save_pretrained(output_dir)
    # The tokenizer.json that transformers 5 writes for a unigram vocabulary splits words into characters
    # (see encoders.t5._load_tokenizer); keep spiece.model as the only vocabulary file.
    os.remove(os.path.join(output_dir, "tokenizer.json"))
    config = T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=d_kv or d_model // num_heads,
                      num_heads=num_heads, num_layers=num_layers, d_ff=d_ff, feed_forward_proj="gated-gelu",
                      use_cache=False, is_encoder_decoder=False)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = T5EncoderModel(config)
    finally:
        torch.random.set_rng_state(generator_state)  # leave the caller's random stream alone
    model.save_pretrained(output_dir)
    return output_dir


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True)
    parser.add_argument("--d_model", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_tiny_t5(args.output, d_model=args.d_model, seed=args.seed))


if __name__ == "__main__":
    main()
