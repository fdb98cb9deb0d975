"""The shipped CLIP tokenizer files are exactly open-clip-torch's vocabulary, and encode like CLIP."""

from pathlib import Path

import open_clip
import pytest

from webui.models.clip_tokenizer import PAD_CLIP_L, PAD_OPEN_CLIP, TOKENIZER_DIR, VOCAB_SIZE, clip_tokenizer, write_vocab_files

BPE = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"


def test_shipped_files_equal_a_fresh_build_from_open_clip(tmp_path):
    write_vocab_files(BPE, tmp_path)
    for name in ("vocab.json", "merges.txt"):
        assert (tmp_path / name).read_bytes() == (TOKENIZER_DIR / name).read_bytes(), name


def test_length_and_special_tokens():
    tok = clip_tokenizer(PAD_CLIP_L)
    assert len(tok) == VOCAB_SIZE
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (49406, 49407, 49407)
    assert clip_tokenizer(PAD_OPEN_CLIP).pad_token_id == 0  # "!" pads SD2 / SDXL's second encoder


@pytest.mark.parametrize("prompt", ["a photo of a cat", "Café NAÏVE, (masterpiece:1.2) 1234!!", "x" * 300])
def test_encodes_like_open_clip(prompt):
    ours = clip_tokenizer(PAD_CLIP_L)(prompt, padding="max_length", max_length=77, truncation=True).input_ids
    theirs = open_clip.get_tokenizer("ViT-L-14")([prompt])[0].tolist()
    end = theirs.index(49407) + 1
    assert ours[:end] == theirs[:end]
    assert len(ours) == 77 and len(set(ours[1 : end - 1])) > 1  # a real encoding, not all padding


def test_open_clip_padding_tokenizer_pads_with_exclamation_mark():
    """As on the Hub (SDXL tokenizer_2, SD2 tokenizer): "!" is the pad token, so transformers splits
    "!!" into two "!" tokens where open_clip/A1111 have one "!!" token. The engine builds its token
    ids itself (A1111 chunking) and must not rely on this tokenizer for text containing "!"."""
    tok = clip_tokenizer(PAD_OPEN_CLIP)
    ids = tok("a cat", padding="max_length", max_length=77).input_ids
    assert ids[:4] == [49406, 320, 2368, 49407] and set(ids[4:]) == {0}
