"""The CLIP tokenizers SD uses, built offline from the BPE vocabulary that open-clip-torch ships.

diffusers silently builds a 2-token tokenizer when tokenizer files are missing (every prompt becomes
padding), so Easel never relies on a checkpoint or the Hub for these: `vocab.json` and `merges.txt`
ship in `tokenizer/` and are checked to equal a fresh build from open-clip-torch's file.

Quirk kept for parity with the Hub configs diffusers expects: with pad token "!", transformers treats
"!" as special, so "!!" encodes as two tokens where open_clip (A1111) has one. Code that must match
A1111 token for token tokenizes with the CLIP-L tokenizer and pads with id 0 itself."""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

TOKENIZER_DIR = Path(__file__).parent / "tokenizer"
VOCAB_SIZE = 49408
MAX_LENGTH = 77
# SD1's CLIP-L pads with the end token; OpenCLIP encoders (SD2, SDXL's second encoder) pad with "!".
PAD_CLIP_L = "<|endoftext|>"
PAD_OPEN_CLIP = "!"


def _bytes_to_unicode() -> dict[int, str]:
    """The reversible byte -> printable-character table of GPT-2/CLIP BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def vocab_from_bpe(bpe_gz: Path) -> tuple[dict[str, int], list[str]]:
    """(vocab, merges) exactly as OpenAI's CLIP builds them from `bpe_simple_vocab_16e6.txt.gz`."""
    lines = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    base = list(_bytes_to_unicode().values())
    tokens = base + [t + "</w>" for t in base] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_vocab_files(bpe_gz: Path, out_dir: Path) -> None:
    """Regenerate the shipped files: `python -m webui.models.clip_tokenizer <bpe.txt.gz>`."""
    vocab, merges = vocab_from_bpe(bpe_gz)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


@lru_cache(maxsize=None)
def clip_tokenizer(pad_token: str = PAD_CLIP_L) -> CLIPTokenizer:
    """A CLIP tokenizer from the shipped files; raises if they are damaged (wrong length)."""
    tok = CLIPTokenizer.from_pretrained(
        TOKENIZER_DIR, local_files_only=True, pad_token=pad_token, model_max_length=MAX_LENGTH
    )
    if len(tok) != VOCAB_SIZE:
        raise RuntimeError(f"CLIP tokenizer in {TOKENIZER_DIR} has {len(tok)} tokens, expected {VOCAB_SIZE}")
    return tok


if __name__ == "__main__":
    import sys

    write_vocab_files(Path(sys.argv[1]), TOKENIZER_DIR)
    print(f"wrote {TOKENIZER_DIR}")
