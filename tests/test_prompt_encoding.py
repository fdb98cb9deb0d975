"""A1111 prompt encoding on real tiny pipelines: parity with diffusers for plain prompts, chunking,
emphasis, clip skip, padding, limits, and images generated from the result."""

from functools import cache

import numpy as np
import open_clip.tokenizer
import pytest
import torch

from webui.generation.prompt_encoding import (
    MAX_CHUNKS,
    MAX_TOKENS,
    Conditioning,
    PromptError,
    count_tokens,
    encode_prompts,
    tokenize_prompt,
)
from webui.generation.prompt_parser import parse_prompt_attention
from webui.models.tiny import tiny_pipeline

SD, XL = ("sd1", "sd2"), ("sdxl-base", "sdxl-refiner")
TREES = "tree " * 70  # 70 tokens


@cache
def pipe(family: str):
    """Built once per test session; the tests only read these pipelines."""
    return tiny_pipeline(family, seed=0)


def encode(family: str, prompt: str, negative: str = "blurry", clip_skip: int = 1) -> Conditioning:
    return encode_prompts(pipe(family), [prompt], [negative], clip_skip=clip_skip)


def diffusers_encode(family: str, prompt: str, negative: str) -> tuple:
    """diffusers' own path: (prompt_embeds, negative_prompt_embeds[, pooled, negative_pooled])."""
    with torch.no_grad():
        return pipe(family).encode_prompt(
            prompt, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True, negative_prompt=negative
        )


@pytest.mark.parametrize("family", SD + XL)
@pytest.mark.parametrize("prompt", ["a red cube on a table", ""])
def test_plain_prompt_equals_diffusers_own_encoding(family, prompt):
    """Layer choice, padding ids (49407 for CLIP-L, 0 for OpenCLIP) and pooling agree with diffusers."""
    ours = encode(family, prompt, negative="blurry, low quality")
    theirs = diffusers_encode(family, prompt, "blurry, low quality")
    assert ours.prompt_embeds.shape == theirs[0].shape == (1, 77, theirs[0].shape[-1])
    torch.testing.assert_close(ours.prompt_embeds, theirs[0])
    torch.testing.assert_close(ours.negative_prompt_embeds, theirs[1])
    if family in XL:
        torch.testing.assert_close(ours.pooled_prompt_embeds, theirs[2])
        torch.testing.assert_close(ours.negative_pooled_prompt_embeds, theirs[3])
    else:
        assert ours.pooled_prompt_embeds is None and ours.negative_pooled_prompt_embeds is None


def test_sdxl_dims_are_both_encoders_concatenated():
    c, p = encode("sdxl-base", "a cube"), pipe("sdxl-base")
    assert c.prompt_embeds.shape[-1] == p.text_encoder.config.hidden_size + p.text_encoder_2.config.hidden_size
    assert c.pooled_prompt_embeds.shape == (1, p.text_encoder_2.config.projection_dim)


def test_refiner_uses_bigg_alone_with_pooled():
    c, p = encode("sdxl-refiner", "a cube"), pipe("sdxl-refiner")
    assert p.text_encoder is None
    assert c.prompt_embeds.shape == (1, 77, p.text_encoder_2.config.hidden_size)
    assert c.pooled_prompt_embeds.shape == c.negative_pooled_prompt_embeds.shape
    assert c.pooled_prompt_embeds.shape == (1, p.text_encoder_2.config.projection_dim)


def test_sd1_clip_skip_is_a1111s_count():
    """A1111 "Clip skip: 2" = penultimate layer, then the final layer norm (diffusers' clip_skip=1, which
    itself fails under transformers 5: it reaches for the removed `text_encoder.text_model`)."""
    one, two = encode("sd1", "a red cube", clip_skip=1), encode("sd1", "a red cube", clip_skip=2)
    assert not torch.allclose(one.prompt_embeds, two.prompt_embeds)
    te = pipe("sd1").text_encoder
    ids = pipe("sd1").tokenizer("a red cube", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = te.final_layer_norm(te(ids, output_hidden_states=True).hidden_states[-2])
    torch.testing.assert_close(two.prompt_embeds, expected)


@pytest.mark.parametrize("family", ("sd2", *XL))
def test_clip_skip_is_ignored_where_a1111_ignores_it(family):
    torch.testing.assert_close(
        encode(family, "a cube", clip_skip=2).prompt_embeds, encode(family, "a cube").prompt_embeds
    )


@pytest.mark.parametrize("clip_skip", [0, 3])  # the tiny CLIP-L has 2 layers
def test_clip_skip_out_of_range_is_refused(clip_skip):
    with pytest.raises(PromptError, match="clip skip"):
        encode("sd1", "a cube", clip_skip=clip_skip)


def test_original_emphasis_scales_the_token_then_restores_the_chunk_mean():
    """On the refiner's bigG (penultimate layer, no final norm): SD1's tiny untrained final norm has a
    chunk mean of ~0, which makes A1111's mean restoration numerically meaningless there."""
    plain = encode("sdxl-refiner", "a red cube").prompt_embeds[0]
    strong = encode("sdxl-refiner", "a (red:1.5) cube").prompt_embeds[0]
    assert tokenize_prompt("a red cube")[0][0].tokens[:5] == (49406, 320, 736, 11353, 49407)
    ratio = strong / plain
    k = ratio[3].mean().item()  # every unweighted vector is rescaled by one factor k
    rest = ratio[[0, 1, 3, 4, 40, 76]]
    torch.testing.assert_close(rest, torch.full_like(rest, k))
    torch.testing.assert_close(ratio[2], torch.full_like(ratio[2], 1.5 * k))  # "red" gets 1.5 k
    torch.testing.assert_close(strong.mean(), plain.mean())
    assert abs(k - 1) > 1e-4


def test_weight_one_is_the_plain_prompt_and_brackets_change_it():
    assert torch.equal(encode("sd1", "(a:1.0) cube").prompt_embeds, encode("sd1", "a cube").prompt_embeds)
    assert not torch.allclose(encode("sd1", "(a) cube").prompt_embeds, encode("sd1", "a cube").prompt_embeds)
    assert not torch.allclose(encode("sd1", "[a] cube").prompt_embeds, encode("sd1", "a cube").prompt_embeds)


def test_sdxl_emphasis_keeps_each_encoders_mean():
    width = pipe("sdxl-base").text_encoder.config.hidden_size
    plain = encode("sdxl-base", "a red cube").prompt_embeds[0]
    strong = encode("sdxl-base", "a (red:1.5) cube").prompt_embeds[0]
    for part in (slice(None, width), slice(width, None)):
        torch.testing.assert_close(strong[:, part].mean(), plain[:, part].mean())
    assert not torch.allclose(strong, plain)
    torch.testing.assert_close(
        encode("sdxl-base", "a (red:1.5) cube").pooled_prompt_embeds,
        encode("sdxl-base", "a red cube").pooled_prompt_embeds,
    )  # pooled comes from the unweighted last layer, as A1111


@pytest.mark.parametrize("family", ["sd1", "sdxl-base"])
def test_long_prompt_is_two_chunks_and_the_negative_is_padded_with_the_empty_prompt(family):
    words = "word " * 80
    c = encode(family, words, negative="blurry")
    assert c.prompt_embeds.shape[:2] == c.negative_prompt_embeds.shape[:2] == (1, 154)
    first, rest = encode(family, "word " * 75), encode(family, "word " * 5)
    torch.testing.assert_close(c.prompt_embeds[:, :77], first.prompt_embeds)
    torch.testing.assert_close(c.prompt_embeds[:, 77:], rest.prompt_embeds)
    torch.testing.assert_close(c.negative_prompt_embeds[:, :77], first.negative_prompt_embeds)
    torch.testing.assert_close(c.negative_prompt_embeds[:, 77:], encode(family, "").prompt_embeds)
    if family in XL:  # pooled is the first chunk's
        torch.testing.assert_close(c.pooled_prompt_embeds, first.pooled_prompt_embeds)
    short = encode(family, "blurry", negative=words)  # and the other way round: the prompt is padded
    torch.testing.assert_close(short.prompt_embeds[:, 77:], encode(family, "").prompt_embeds)


def test_break_starts_a_new_chunk():
    c = encode("sd1", "a red cube BREAK a blue sphere")
    assert c.prompt_embeds.shape[1] == 154
    torch.testing.assert_close(c.prompt_embeds[:, :77], encode("sd1", "a red cube").prompt_embeds)
    torch.testing.assert_close(c.prompt_embeds[:, 77:], encode("sd1", "a blue sphere").prompt_embeds)


def test_comma_backtracking_moves_the_words_after_a_near_comma():
    """70 words, a comma, 10 words: the chunk ends at the comma (5 tokens back <= 20), as if BREAK."""
    chunks, count = tokenize_prompt(TREES + ", " + "cat " * 10)
    assert len(chunks) == 2 and chunks[0].tokens[71:73] == (267, 49407)  # BOS, 70 trees, the comma, padding
    assert chunks[1].tokens[1:12] == (2368,) * 10 + (49407,)
    assert count == 85 and count_tokens(TREES + ", " + "cat " * 10) == (85, 150)  # A1111 counts the padded chunk
    torch.testing.assert_close(
        encode("sd1", TREES + ", " + "cat " * 10).prompt_embeds,
        encode("sd1", TREES + ", BREAK " + "cat " * 10).prompt_embeds,
    )


def test_no_backtracking_when_the_comma_is_far():
    chunks, count = tokenize_prompt("tree " * 44 + ", " + "cat " * 40)  # comma 31 tokens before the chunk end
    assert len(chunks) == 2 and count == 85
    assert chunks[0].tokens[45] == 267 and chunks[0].tokens[75:] == (2368, 49407)
    assert chunks[1].tokens[1:11] == (2368,) * 10


def test_weights_follow_their_tokens_into_the_next_chunk():
    chunks, _ = tokenize_prompt(TREES + ", (cat:1.3) " + "dog " * 9)
    assert chunks[0].weights == (1.0,) * 77
    assert chunks[1].weights[:3] == (1.0, 1.3, 1.0)


def test_ids_are_open_clips_even_for_exclamation_marks():
    """A1111 tokenizes for SD2/SDXL's bigG with open_clip, where "!!" is one token."""
    prompt = "wow!! (so cool!!!:1.2) a dog!"
    got = [t for c in tokenize_prompt(prompt)[0] for t in c.tokens if t < 49406]
    want = [t for text, _ in parse_prompt_attention(prompt) for t in open_clip.tokenizer._tokenizer.encode(text)]
    assert got == want


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("", (0, 75)),
        ("a cat", (2, 75)),
        ("a cat <lora:x:0.5>", (2, 75)),
        ("(a:1.3) [cat]", (2, 75)),
        ("word " * 75, (75, 75)),
        ("word " * 76, (76, 150)),
        ("a BREAK b", (76, 150)),
        ("word " * 10_000, (10_000, 10_050)),  # counted, never refused: the UI shows it
    ],
)
def test_count_tokens_like_a1111s_counter(prompt, expected):
    assert count_tokens(prompt) == expected


def test_prompt_past_the_limit_is_refused_naming_it():
    with pytest.raises(PromptError, match=f"at most {MAX_TOKENS} tokens") as err:
        encode("sd1", "word " * 10_000)
    assert "prompt is 10000 tokens" in str(err.value)
    with pytest.raises(PromptError, match="negative prompt"):
        encode("sd1", "a cat", negative="word " * (MAX_TOKENS + 1))
    assert encode("sd1", "word " * MAX_TOKENS).prompt_embeds.shape[1] == 77 * MAX_CHUNKS


def test_batch_caches_and_stacks_prompts_of_different_lengths():
    long = "word " * 80
    c = encode_prompts(pipe("sdxl-base"), ["a cube", long, "a cube"], ["", "blurry", ""])
    assert c.prompt_embeds.shape[:2] == c.negative_prompt_embeds.shape[:2] == (3, 154)
    assert torch.equal(c.prompt_embeds[0], c.prompt_embeds[2])
    one = encode("sdxl-base", "a cube").prompt_embeds[0]
    torch.testing.assert_close(c.prompt_embeds[0, :77], one)
    torch.testing.assert_close(c.prompt_embeds[0, 77:], one[-1:].expand(77, -1))  # A1111's stack_conds
    torch.testing.assert_close(c.prompt_embeds[1], encode("sdxl-base", long).prompt_embeds[0])
    assert c.pooled_prompt_embeds.shape == (3, pipe("sdxl-base").text_encoder_2.config.projection_dim)


@pytest.mark.parametrize("family", XL)
def test_sdxl_empty_negative_prompt_is_zeros_as_in_a1111(family):
    c = encode(family, "a cube", negative="")
    assert not c.negative_prompt_embeds.any() and not c.negative_pooled_prompt_embeds.any()
    assert c.negative_prompt_embeds.shape == c.prompt_embeds.shape
    assert c.prompt_embeds.any()
    empty = encode(family, "", negative="blurry")  # only the negative prompt is zeroed
    assert empty.prompt_embeds.any() and empty.pooled_prompt_embeds.any()


def test_sd1_empty_negative_prompt_is_encoded():
    torch.testing.assert_close(
        encode("sd1", "a cube", negative="").negative_prompt_embeds, encode("sd1", "").prompt_embeds
    )


def test_mismatched_batch_is_refused():
    with pytest.raises(ValueError, match="one negative prompt per prompt"):
        encode_prompts(pipe("sd1"), ["a", "b"], ["c"])


def test_result_is_in_the_encoders_dtype():
    p = tiny_pipeline("sdxl-base", seed=0).to(torch.bfloat16)
    c = encode_prompts(p, ["a (red:1.2) cube"], [""])
    assert {t.dtype for t in vars(c).values()} == {torch.bfloat16}


def _generate(family: str, seed: int = 1, **kw) -> np.ndarray:
    kw.update(num_inference_steps=2, output_type="np", generator=torch.Generator("cpu").manual_seed(seed))
    if family == "sdxl-refiner":
        kw.update(image=np.random.default_rng(seed).random((64, 64, 3), dtype=np.float32), strength=0.6)
        kw["num_inference_steps"] = 4
    else:
        kw.update(height=64, width=64)
    return pipe(family)(**kw).images


@pytest.mark.parametrize("family", ["sd1", "sdxl-base", "sdxl-refiner"])
def test_pipeline_generates_from_the_conditioning(family):
    plain = _generate(family, **vars(encode(family, "a red cube", negative="blurry")))
    assert plain.shape == (1, 64, 64, 3) and np.isfinite(plain).all()
    np.testing.assert_allclose(plain, _generate(family, prompt="a red cube", negative_prompt="blurry"), atol=1e-5)
    long = _generate(family, **vars(encode(family, "a red cube, " + "word " * 80, negative="blurry")))
    assert long.shape == (1, 64, 64, 3) and np.isfinite(long).all()
    assert not np.allclose(long, plain)
