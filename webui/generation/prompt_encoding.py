"""Prompts -> text-encoder embeddings the way AUTOMATIC1111 makes them, handed to diffusers as `prompt_embeds`.

diffusers truncates at 77 tokens and knows no `(word:1.2)`; A1111 users expect long prompts in 75-token
chunks and "Original" emphasis. This module ports `sd_hijack_clip.py` / `sd_hijack_open_clip.py` /
`sd_emphasis.py` (A1111 v1.10):

- Each parsed fragment is tokenized without special tokens, always with Easel's CLIP-L tokenizer:
  transformers treats the OpenCLIP pad "!" as special and would split "!!" (A1111 uses open_clip's
  tokenizer, which does not), so ids are built once and each encoder's pad id is substituted here.
- Chunks of 75 tokens + BOS/EOS; `BREAK` starts a chunk; when a chunk fills up and its last comma is at
  most 20 tokens back (A1111's `comma_padding_backtrack` default), the text after the comma moves on.
  CLIP-L pads with the end token 49407, OpenCLIP (SD2, SDXL's bigG) with 0 after the end token.
- Every chunk is encoded on its own; a token's weight multiplies its vector, then the chunk is rescaled
  so its mean is the unweighted mean ("Original" emphasis), per encoder, per prompt.
- Clip skip follows A1111: SD1 takes `hidden_states[-clip_skip]` then the final layer norm when
  clip_skip > 1 (diffusers' `clip_skip` counts one less). SD2 ignores it, as A1111 does: its OpenCLIP
  wrapper always uses the penultimate layer + final norm, which is diffusers' converted 23-layer
  encoder's `last_hidden_state`. SDXL (base and refiner) ignores it too, as A1111 with its default
  "Clip skip SDXL" off: both encoders give their penultimate hidden state without final norm.
- SDXL: CLIP-L and bigG outputs are concatenated on the last dim; the pooled vector is bigG's
  `text_embeds` of the first chunk; an empty negative prompt is all zeros (A1111's
  `force_zero_negative_prompt`, also for the refiner, whatever the pipeline's `force_zeros_for_empty_prompt`).
- Prompts of one batch with different chunk counts repeat their last vector (A1111's `stack_conds`); the
  shorter of cond/uncond gets the empty prompt's chunk appended (A1111's `pad_cond`, i.e. "Pad
  prompt/negative prompt to be same length" on: diffusers batches cond and uncond in one UNet pass).

Not here: textual inversion embeddings (`embeddings/`; their trigger words are encoded as plain text),
prompt editing and `AND`, the "No norm"/"Ignore"/"None" emphasis modes. Prompts over MAX_CHUNKS chunks
are refused with PromptError rather than growing the cross-attention context without bound."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from diffusers.utils.torch_utils import get_module_execution_device
from transformers import CLIPTextModel, CLIPTextModelWithProjection

from webui.generation.prompt_parser import BREAK, PromptError, extract_extra_networks, parse_prompt_attention
from webui.models.clip_tokenizer import clip_tokenizer

__all__ = [
    "CHUNK_LENGTH",
    "COMMA_PADDING_BACKTRACK",
    "MAX_CHUNKS",
    "MAX_TOKENS",
    "Conditioning",
    "PromptChunk",
    "PromptError",
    "count_tokens",
    "encode_prompts",
    "tokenize_prompt",
]

CHUNK_LENGTH = 75  # prompt tokens per chunk; + BOS + EOS = CLIP's 77 positions
COMMA_PADDING_BACKTRACK = 20  # A1111's "Prompt word wrap length limit" default
MAX_CHUNKS = 32  # 2400 tokens: far past any real prompt, and a 2464-token cross-attention context is still cheap
MAX_TOKENS = MAX_CHUNKS * CHUNK_LENGTH
BOS, EOS = 49406, 49407
OPEN_CLIP_PAD = 0  # "!": what open_clip pads with after the end token


@dataclass
class Conditioning:
    """What a diffusers SD/SDXL pipeline call takes instead of `prompt=`: pass each field by its name."""

    prompt_embeds: torch.Tensor  # (batch, 77 * chunks, dim)
    negative_prompt_embeds: torch.Tensor  # same shape as prompt_embeds
    pooled_prompt_embeds: torch.Tensor | None  # SDXL only: (batch, bigG projection dim)
    negative_pooled_prompt_embeds: torch.Tensor | None


@dataclass(frozen=True)
class PromptChunk:
    """77 token ids (BOS, up to 75 prompt tokens, end-token padding, EOS) and one weight per id."""

    tokens: tuple[int, ...]
    weights: tuple[float, ...]


def tokenize_prompt(prompt: str) -> tuple[list[PromptChunk], int]:
    """A1111's `tokenize_line`: the chunks and the token count its counter shows (75 per full chunk)."""
    parsed = parse_prompt_attention(prompt)
    tok = clip_tokenizer()
    comma = tok.convert_tokens_to_ids(",</w>")
    ids = tok([text for text, _ in parsed], add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
    chunks: list[PromptChunk] = []
    tokens: list[int] = []
    weights: list[float] = []
    count = 0
    last_comma = -1

    def close(is_last: bool = False) -> None:
        nonlocal tokens, weights, count, last_comma
        count += len(tokens) if is_last else CHUNK_LENGTH
        pad = CHUNK_LENGTH - len(tokens)
        chunks.append(PromptChunk((BOS, *tokens, *[EOS] * pad, EOS), (1.0, *weights, *[1.0] * pad, 1.0)))
        tokens, weights, last_comma = [], [], -1

    for fragment_ids, (text, weight) in zip(ids, parsed, strict=True):
        if (text, weight) == BREAK:
            close()
            continue
        for token in fragment_ids:
            if token == comma:
                last_comma = len(tokens)
            elif (
                COMMA_PADDING_BACKTRACK
                and len(tokens) == CHUNK_LENGTH
                and last_comma != -1
                and len(tokens) - last_comma <= COMMA_PADDING_BACKTRACK
            ):
                cut = last_comma + 1  # the comma stays, the words after it move to the next chunk
                moved = tokens[cut:], weights[cut:]
                tokens, weights = tokens[:cut], weights[:cut]
                close()
                tokens, weights = moved
            if len(tokens) == CHUNK_LENGTH:
                close()
            tokens.append(token)
            weights.append(weight)
    if tokens or not chunks:
        close(is_last=True)
    return chunks, count


def count_tokens(prompt: str) -> tuple[int, int]:
    """(tokens, limit) as A1111's counter shows "80/150": extra-network tags do not count, the limit
    grows by 75 per chunk. Never raises for length, so the UI can show a count past MAX_TOKENS."""
    text, _ = extract_extra_networks(prompt)
    _, count = tokenize_prompt(text)
    return count, math.ceil(max(count, 1) / CHUNK_LENGTH) * CHUNK_LENGTH


@dataclass(frozen=True)
class _Encoder:
    model: CLIPTextModel | CLIPTextModelWithProjection
    pad_id: int
    layer: int | None  # index into hidden_states; None: last_hidden_state
    final_norm: bool
    pooled: bool  # this encoder's text_embeds is SDXL's pooled vector


class _Encoded(NamedTuple):
    embeds: torch.Tensor  # (77 * chunks, dim)
    pooled: torch.Tensor | None


def _text_encoders(pipeline, clip_skip: int) -> tuple[list[_Encoder], bool]:
    """The encoders in diffusers' concatenation order, and whether this is the SDXL family."""
    if not isinstance(clip_skip, int) or clip_skip < 1:
        raise PromptError(f"clip skip must be a whole number of 1 or more, got {clip_skip!r}")
    te = getattr(pipeline, "text_encoder", None)
    te2 = getattr(pipeline, "text_encoder_2", None)
    if te2 is not None:
        if not isinstance(te2, CLIPTextModelWithProjection):
            raise TypeError(f"{type(pipeline).__name__}: text_encoder_2 is {type(te2).__name__}, expected CLIP bigG")
        encoders = [_Encoder(te, EOS, -2, False, False)] if te is not None else []
        return [*encoders, _Encoder(te2, OPEN_CLIP_PAD, -2, False, True)], True
    if not isinstance(te, CLIPTextModel):
        raise TypeError(f"{type(pipeline).__name__} has no CLIP text encoder to encode prompts with")
    if te.config.hidden_act != "quick_gelu":  # OpenCLIP-H (SD2) uses exact GELU, OpenAI's CLIP-L QuickGELU
        return [_Encoder(te, OPEN_CLIP_PAD, None, False, False)], False
    if clip_skip > te.config.num_hidden_layers:
        raise PromptError(f"clip skip {clip_skip} is more than the text encoder's {te.config.num_hidden_layers} layers")
    if clip_skip == 1:
        return [_Encoder(te, EOS, None, False, False)], False
    return [_Encoder(te, EOS, -clip_skip, True, False)], False


def _padded(tokens: tuple[int, ...], pad_id: int) -> list[int]:
    """A1111's `process_tokens`: everything after the first end token becomes the pad id."""
    end = tokens.index(EOS) + 1
    return [*tokens[:end], *[pad_id] * (len(tokens) - end)]


def _emphasis(z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A1111's "Original": weight each token's vector, then restore each chunk's mean. Like A1111 the
    arithmetic promotes to the weights' float32; the caller casts back.

    Chunks without emphasis are left as they are. In float32 that is what A1111 computes (mean/mean is
    exactly 1); it also spares them A1111's 0/0 when a chunk's mean is 0 (an untrained final layer norm)."""
    original = z.mean(dim=(1, 2), keepdim=True)
    weighted = z * weights[..., None]
    emphasized = weighted * (original / weighted.mean(dim=(1, 2), keepdim=True))
    plain = (weights == 1.0).all(dim=1)[:, None, None]
    return torch.where(plain, z.to(emphasized.dtype), emphasized)


def _run(encoder: _Encoder, chunks: list[PromptChunk]) -> tuple[torch.Tensor, torch.Tensor | None]:
    model = encoder.model
    device = get_module_execution_device(model)
    ids = torch.tensor([_padded(c.tokens, encoder.pad_id) for c in chunks], dtype=torch.long, device=device)
    out = model(input_ids=ids, output_hidden_states=encoder.layer is not None)
    z = out.last_hidden_state if encoder.layer is None else out.hidden_states[encoder.layer]
    if encoder.final_norm:
        z = getattr(model, "text_model", model).final_layer_norm(z)  # transformers 5 dropped `.text_model`
    z = _emphasis(z, torch.tensor([c.weights for c in chunks], dtype=torch.float32, device=z.device))
    pooled = out.text_embeds[0] if encoder.pooled else None  # the first chunk's, as A1111
    return z.reshape(-1, z.shape[-1]).to(model.dtype), pooled


def _encode(encoders: list[_Encoder], chunks: list[PromptChunk]) -> _Encoded:
    outputs = [_run(e, chunks) for e in encoders]
    last = outputs[-1][0]
    embeds = torch.cat([z.to(last.device, last.dtype) for z, _ in outputs], dim=-1)
    pooled = next((p for _, p in outputs if p is not None), None)
    return _Encoded(embeds, pooled)


def _zeros(encoded: _Encoded) -> _Encoded:
    pooled = None if encoded.pooled is None else torch.zeros_like(encoded.pooled)
    return _Encoded(torch.zeros_like(encoded.embeds), pooled)


def _stack(items: list[_Encoded]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A1111's `stack_conds`: shorter prompts of a batch repeat their last vector up to the longest."""
    length = max(e.embeds.shape[0] for e in items)
    embeds = torch.stack([torch.cat([e.embeds, e.embeds[-1:].expand(length - len(e.embeds), -1)]) for e in items])
    pooled = None if items[0].pooled is None else torch.stack([e.pooled for e in items])
    return embeds, pooled


def _pad_cond(embeds: torch.Tensor, length: int, empty: torch.Tensor) -> torch.Tensor:
    """A1111's `pad_cond`: append the empty prompt's 77 vectors until `length`."""
    repeats = (length - embeds.shape[1]) // empty.shape[0]
    return torch.cat([embeds, empty.repeat(repeats, 1).expand(embeds.shape[0], -1, -1)], dim=1)


def _chunked(texts: dict[str, str]) -> dict[str, list[PromptChunk]]:
    """Tokenize every distinct text before any encoder runs, so an over-long prompt costs nothing."""
    result: dict[str, list[PromptChunk]] = {}
    for text, label in texts.items():
        chunks, count = tokenize_prompt(text)
        if len(chunks) > MAX_CHUNKS:
            raise PromptError(
                f"the {label} is {count} tokens in {len(chunks)} chunks of {CHUNK_LENGTH}; Easel encodes at most "
                f"{MAX_TOKENS} tokens ({MAX_CHUNKS} chunks, MAX_CHUNKS in {__name__}): shorten it"
            )
        result[text] = chunks
    return result


def encode_prompts(pipeline, prompts: list[str], negative_prompts: list[str], clip_skip: int = 1) -> Conditioning:
    """Embeddings for one batch (one prompt and one negative prompt per image), extra-network tags already cut.

    Runs each distinct text once, under no_grad, on each encoder's execution device, in its dtype."""
    if not prompts or len(prompts) != len(negative_prompts):
        raise ValueError(f"need one negative prompt per prompt, got {len(prompts)} and {len(negative_prompts)}")
    encoders, sdxl = _text_encoders(pipeline, clip_skip)
    labels = dict.fromkeys(negative_prompts, "negative prompt") | dict.fromkeys([*prompts, ""], "prompt")
    chunks = _chunked(labels)
    cache: dict[tuple[str, bool], _Encoded] = {}

    def encoded(text: str, negative: bool) -> _Encoded:
        zero = sdxl and negative and text == ""
        if (text, zero) not in cache:
            cache[text, zero] = _zeros(encoded("", False)) if zero else _encode(encoders, chunks[text])
        return cache[text, zero]

    with torch.no_grad():
        cond, pooled = _stack([encoded(p, False) for p in prompts])
        uncond, negative_pooled = _stack([encoded(n, True) for n in negative_prompts])
        if cond.shape[1] != uncond.shape[1]:
            empty, length = encoded("", False).embeds, max(cond.shape[1], uncond.shape[1])
            cond, uncond = _pad_cond(cond, length, empty), _pad_cond(uncond, length, empty)
    return Conditioning(cond, uncond, pooled, negative_pooled)
