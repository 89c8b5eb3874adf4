"""The tiny profile's tokenizer: CLIP's byte-level BPE vocabulary, characters only, written locally instead of
fetched from a hub (every tiny text encoder builds on it)."""

from __future__ import annotations

import json
from pathlib import Path


def _byte_vocab() -> list[str]:
    """CLIP's byte→unicode table: every byte is a printable character the BPE can spell with."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def _vocab() -> dict[str, int]:
    """A character-level CLIP BPE vocabulary: every byte alone and at a word's end, then the two special tokens."""
    chars = _byte_vocab()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


def write_tokenizer_files(folder: Path) -> None:
    """A character-level CLIP BPE vocabulary (no merges), written locally instead of fetched."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(_vocab(), ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def tiny_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    write_tokenizer_files(folder)
    tok = CLIPTokenizer(
        str(folder / "vocab.json"),
        str(folder / "merges.txt"),
        model_max_length=77,  # without it encode_prompt overflows
    )
    tok.save_pretrained(folder)
    return tok


def memory_tokenizer():
    """The same tokenizer as `tiny_tokenizer` (the same vocabulary and ids, so the same token ids for any text),
    built in memory and written nowhere: for the unit tests' in-memory components."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=_vocab(), merges=[], model_max_length=77)
