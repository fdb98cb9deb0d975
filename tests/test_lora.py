"""The LoRA extension on a real tiny SD1 model, checked the way a user would: a LoRA changes the picture,
more weight changes it more, weight 0 or removing the tag gives the base picture bit for bit, two LoRAs
combine, text-encoder and UNet weights act apart, files load once, fusing gives the same picture, and
a failure or interrupt never leaves the model patched. Formats, SDXL and mismatches: test_lora_formats.py;
the library and the infotext: test_lora_library.py."""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import lora_files as lf
from engine_helpers import linked_paths, picture, pixels
from webui import hookimpl
from webui.generation.engine import Engine, EngineOptions
from webui.generation.params import request_from_infotext
from webui.generation.progress import JobControl
from webui.generation.request import GenerationRequest, Mode
from webui.models.manager import ModelManager
from webui.models.tiny import tiny_pipeline
from webui.plugins import ExtensionError, Plugins


@pytest.fixture(scope="module")
def sd1(tiny_checkpoint, tmp_path_factory):
    pipe = tiny_pipeline("sd1", seed=0)  # the checkpoint's layout, for writing LoRA files that fit it
    plugins = Plugins.builtin()  # the manager hears model_unloaded, as in `easel serve`
    paths = linked_paths(tmp_path_factory.mktemp("lora-sd1"), {"tiny.safetensors": tiny_checkpoint("sd1")})
    engine = Engine(ModelManager(paths, plugins=plugins), EngineOptions(save_images=False), plugins)
    folder = engine.manager.paths.folder("lora")
    lf.write(folder, "a", lf.kohya(pipe, "ldm", seed=1))
    lf.write(folder, "b", lf.kohya(pipe, "diffusers", seed=2))
    lf.write(folder, "soft", lf.kohya(pipe, "ldm", seed=3, scale=0.2))
    lf.write(folder, "unet_only", lf.kohya(pipe, "ldm", seed=4, te=False))
    return SimpleNamespace(engine=engine, pipe=pipe, folder=folder, base=image(engine, "a cube"))


def generate(engine, prompt: str, control: JobControl | None = None, **kw):
    return engine.generate(GenerationRequest(prompt=prompt, steps=2, width=64, height=64, seed=3, **kw),
                           control=control)


def image(engine, prompt: str, **kw) -> np.ndarray:
    return pixels(generate(engine, prompt, **kw).images[0].image)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool((a == b).all())


def test_a_lora_changes_the_picture_more_with_more_weight_and_weight_zero_is_the_base(sd1):
    full, half = image(sd1.engine, "a cube <lora:a:1>"), image(sd1.engine, "a cube <lora:a:0.5>")
    assert np.abs(full - sd1.base).mean() > 5 and not same(half, full)
    assert np.abs(half - sd1.base).mean() < np.abs(full - sd1.base).mean()
    assert same(image(sd1.engine, "a cube <lora:a:0>"), sd1.base)
    assert same(image(sd1.engine, "a cube"), sd1.base)  # removed again: the base model, bit for bit


def test_two_loras_combine(sd1):
    a, b = image(sd1.engine, "a cube <lora:a:0.7>"), image(sd1.engine, "a cube <lora:b:0.7>")
    both = image(sd1.engine, "a cube <lora:a:0.7> <lora:b:0.7>")
    assert not same(both, a) and not same(both, b) and not same(both, sd1.base)
    swapped = image(sd1.engine, "a cube <lora:b:0.7> <lora:a:0.7>")
    assert np.abs(swapped - both).max() <= 1  # the order changes only the float rounding of the sum
    assert same(image(sd1.engine, "a cube"), sd1.base)


def test_text_encoder_and_unet_weights_act_apart_in_a1111_order(sd1):
    te_only, unet_only = image(sd1.engine, "a cube <lora:a:1:0>"), image(sd1.engine, "a cube <lora:a:0:1>")
    assert not same(te_only, sd1.base) and not same(unet_only, sd1.base) and not same(te_only, unet_only)
    assert same(image(sd1.engine, "a cube <lora:a:te=1:unet=0>"), te_only)  # A1111: te first, then unet
    assert same(image(sd1.engine, "a cube <lora:a:unet=1:te=0>"), unet_only)
    # a file without text-encoder layers: its te weight changes nothing
    assert same(image(sd1.engine, "a cube <lora:unet_only:0.3:1>"), image(sd1.engine, "a cube <lora:unet_only:1:1>"))


def test_a_stack_from_the_request_equals_the_prompt_tag_and_lyco_is_an_alias(sd1):
    tagged = image(sd1.engine, "a cube <lora:a:0.8>")
    stacked = image(sd1.engine, "a cube", extensions={"lora": {"stack": [{"name": "a", "weight": 0.8}]}})
    assert same(stacked, tagged) and same(image(sd1.engine, "a cube <lyco:a:0.8>"), tagged)
    split = image(sd1.engine, "a cube", extensions={"lora": {"stack": [{"name": "a", "weight": 1, "unet": 0}]}})
    assert same(split, image(sd1.engine, "a cube <lora:a:1:0>"))
    with pytest.raises(ValueError, match="not a number"):
        generate(sd1.engine, "a cube <lora:a:lots>")


def test_the_ui_sections_slots_equal_prompt_tags_and_add_to_them(sd1):
    slots = {"lora_1": "a", "weight_1": 0.5, "lora_2": "", "weight_2": 1, "lora_3": None, "lora_10": "b", "weight_10": 0.7}
    result = generate(sd1.engine, "a cube", extensions={"lora": slots})
    assert same(pixels(result.images[0].image), image(sd1.engine, "a cube <lora:a:0.5> <lora:b:0.7>"))
    assert "Lora hashes: \"a: " in result.infotexts[0] and ", b: " in result.infotexts[0]
    summed = image(sd1.engine, "a cube <lora:a:0.5>", extensions={"lora": {"lora_1": "a", "weight_1": 0.3}})
    assert same(summed, image(sd1.engine, "a cube <lora:a:0.8>"))  # a file named twice: weights add up
    with pytest.raises(ValueError, match="not a number"):
        generate(sd1.engine, "a cube", extensions={"lora": {"lora_1": "a", "weight_1": "lots"}})


def test_slots_and_stacks_are_recorded_as_tags_and_a_pasted_infotext_gives_the_same_picture(sd1):
    fields = {"lora_1": "a", "weight_1": 0.5, "stack": [{"name": "b", "te": 0.25, "unet": 1}]}
    result = generate(sd1.engine, "a cube", extensions={"lora": fields})
    assert 'Lora stack: "<lora:b:0.25:1> <lora:a:0.5>"' in result.infotexts[0]  # the stack comes before slots
    pasted = request_from_infotext(result.infotexts[0], sd1.engine.plugins, sd1.engine.manager).request
    assert pasted.prompt == "a cube <lora:b:0.25:1> <lora:a:0.5>" and "lora" not in pasted.extensions
    again = sd1.engine.generate(pasted)
    assert same(pixels(again.images[0].image), pixels(result.images[0].image))
    assert "Lora stack" not in again.infotexts[0]  # now they are tags in the prompt


def test_img2img_takes_loras_too(sd1):
    kw = dict(mode=Mode.IMG2IMG, init_image=picture(), denoising_strength=0.6)
    base = image(sd1.engine, "a cube", **kw)
    assert not same(image(sd1.engine, "a cube <lora:a:1>", **kw), base)
    assert same(image(sd1.engine, "a cube", **kw), base)


def test_results_of_another_job_in_an_echoed_request_do_not_reach_the_infotext(sd1):
    echoed = {"lora": {"applied": [{"name": "x", "hash": "0123456789ab"}], "skipped": [{"name": "y", "reason": "r"}]}}
    result = generate(sd1.engine, "a cube", extensions=echoed)
    assert "Lora" not in result.infotexts[0]


def test_each_file_loads_once_and_weight_changes_reuse_it(sd1):
    model = sd1.engine.manager.load(None)
    generate(sd1.engine, "a cube <lora:a:1>")
    adapters = dict(model.pipeline.unet.peft_config)
    params = {id(p) for n, p in model.pipeline.unet.named_parameters() if "lora_A" in n}
    for weight in (0.3, 0.9, 0.6):
        generate(sd1.engine, f"a cube <lora:a:{weight}>")
    assert dict(model.pipeline.unet.peft_config) == adapters  # no new adapter: the file was not loaded again
    assert {id(p) for n, p in model.pipeline.unet.named_parameters() if "lora_A" in n} == params
    assert sd1.engine.manager.load(None).pipeline is model.pipeline  # and the base model was never reloaded


def test_only_the_most_recently_used_files_stay_loaded(sd1):
    from extensions.lora import adapters

    first = image(sd1.engine, "a cube <lora:a:1>")
    for i in range(adapters.MAX_LOADED + 1):
        lf.write(sd1.folder / "many", f"l{i}", lf.kohya(sd1.pipe, "ldm", seed=20 + i, te=False))
        generate(sd1.engine, f"a cube <lora:many/l{i}:1>")
    unet = sd1.engine.manager.load(None).pipeline.unet
    assert len(adapters.state_for(sd1.engine.manager.load(None).pipeline).files) == adapters.MAX_LOADED
    state = adapters.state_for(sd1.engine.manager.load(None).pipeline)
    files = [n for n in unet.peft_config if n != getattr(state.combined, "name", None)]  # not a multi-file stack's
    assert len(files) == adapters.MAX_LOADED  # the dropped adapters left the model too
    assert same(image(sd1.engine, "a cube <lora:a:1>"), first)  # loaded again when needed, same picture
    assert same(image(sd1.engine, "a cube"), sd1.base)


def test_fused_gives_the_unfused_picture_and_restores_the_base_exactly(sd1):
    prompt = "a cube <lora:soft:0.8> <lora:b:0.3>"
    unfused = image(sd1.engine, prompt)
    fused = image(sd1.engine, prompt, override_settings={"lora_fuse": True})
    assert np.abs(fused - unfused).max() <= 1  # float rounding only
    assert same(image(sd1.engine, "a cube"), sd1.base)


def test_fused_and_unfused_unet_outputs_agree_within_float_rounding(sd1):
    from extensions.lora import adapters
    from extensions.lora.library import library_for
    from extensions.lora.session import Active, StackSession

    pipe = sd1.engine.manager.load(None).pipeline
    state = adapters.state_for(pipe)
    stack = [Active(adapters.load(pipe, state, library_for(sd1.engine.manager).find("soft")), 1.0, 0.7)]
    gen = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 77, 32, generator=gen)
    with torch.no_grad():
        base = pipe.unet(x, 500, ctx).sample
        out = {}
        for fuse in (False, True):
            session = StackSession(pipe, state)
            session.apply(stack, fuse)
            out[fuse] = pipe.unet(x, 500, ctx).sample
            session.undo()
        assert torch.equal(pipe.unet(x, 500, ctx).sample, base)
    drift = (out[True] - out[False]).abs().max() / out[False].abs().max()
    assert not torch.equal(out[False], base) and drift < 1e-6


def test_a_fused_stack_is_reused_while_unchanged_and_recomputed_after_a_change_or_a_move(sd1):
    from extensions.lora import adapters
    from extensions.lora.library import library_for
    from extensions.lora.session import Active, StackSession, drop_stale_fused

    pipe = sd1.engine.manager.load(None).pipeline
    state = adapters.state_for(pipe)
    soft = adapters.load(pipe, state, library_for(sd1.engine.manager).find("soft"))
    gen = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 77, 32, generator=gen)

    def run(weight: float):
        session = StackSession(pipe, state)
        session.apply([Active(soft, 1.0, weight)], fuse=True)
        try:
            with torch.no_grad():
                in_use = {p.data.data_ptr() for p, _, _ in state.fused.weights}
                assert in_use == {value.data_ptr() for _, _, value in state.fused.weights}
                return pipe.unet(x, 500, ctx).sample, state.fused
        finally:
            session.undo()

    with torch.no_grad():
        base = pipe.unet(x, 500, ctx).sample
    first, fused = run(0.7)
    again, fused_again = run(0.7)
    assert fused.weights and fused_again is fused and torch.equal(again, first)  # swapped in again, not redone
    changed, fused_changed = run(0.4)
    assert fused_changed is not fused and not torch.equal(changed, first)
    with torch.no_grad():
        assert torch.equal(pipe.unet(x, 500, ctx).sample, base)  # between jobs the weights are the base ones
        pipe.unet.to(torch.float64).to(torch.float32)  # new tensors, as after a trip to RAM and back
    drop_stale_fused(adapters.loaded_models())
    assert state.fused is None  # the kept copy no longer matches the model: not kept
    moved, fused_moved = run(0.4)
    assert fused_moved is not fused_changed and torch.equal(moved, changed)


def test_several_loras_run_as_one_adapter_that_computes_their_sum(sd1):
    from extensions.lora import adapters
    from extensions.lora.library import library_for
    from extensions.lora.session import Active, StackSession, _enable

    pipe = sd1.engine.manager.load(None).pipeline
    state = adapters.state_for(pipe)
    library = library_for(sd1.engine.manager)
    a, b = (adapters.load(pipe, state, library.find(n)) for n in ("a", "b"))
    gen = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 77, 32, generator=gen)
    ids = pipe.tokenizer("a cube", return_tensors="pt").input_ids

    def outputs():
        with torch.no_grad():
            return pipe.unet(x, 500, ctx).sample, pipe.text_encoder(ids)[0]

    def one_by_one(wa: tuple[float, float], wb: tuple[float, float]):  # PEFT's own way: adapter after adapter
        pipe.set_adapters([a.adapter, b.adapter], adapter_weights=[
            {"unet": wa[1], "text_encoder": wa[0]}, {"unet": wb[1], "text_encoder": wb[0]}])
        _enable(pipe, True)
        try:
            return outputs()
        finally:
            _enable(pipe, False)

    def stacked(wa: tuple[float, float], wb: tuple[float, float]):
        session = StackSession(pipe, state)
        session.apply([Active(a, *wa), Active(b, *wb)], fuse=False)
        try:
            return outputs(), state.combined
        finally:
            session.undo()

    _enable(pipe, False)  # loading turns the new adapter on; a job's session turns everything off after it
    base = outputs()
    first = None
    for wa, wb in (((0.7, 0.7), (0.4, 0.4)), ((1.0, 0.2), (0.0, 0.9))):
        (unet, text), stack_adapter = stacked(wa, wb)
        ref_unet, ref_text = one_by_one(wa, wb)
        assert not torch.allclose(unet, base[0]) and not torch.allclose(text, base[1])
        torch.testing.assert_close(unet, ref_unet, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(text, ref_text, rtol=1e-5, atol=1e-6)
        assert stack_adapter.name in pipe.unet.peft_config and stack_adapter.name in pipe.text_encoder.peft_config
        if wa == (1.0, 0.2):  # new weights: the same adapter, rewritten in place (no reload)
            assert stack_adapter is first
        first = stack_adapter
    session = StackSession(pipe, state)
    session.apply([Active(b, 0.4, 0.4), Active(a, 0.7, 0.7)], fuse=False)  # the same files in another order
    assert state.combined is first
    session.undo()
    assert all(torch.equal(p, q) for p, q in zip(outputs(), base))  # undone: the base model bit for bit


class Failing:
    """A test extension that interrupts or fails the job after its first step."""

    def __init__(self, control: JobControl | None = None):
        self.control = control

    @hookimpl
    def step_end(self, state):
        if self.control is None:
            raise RuntimeError("boom")
        self.control.interrupt()


@pytest.mark.parametrize("how", ["interrupt", "error"])
def test_an_interrupted_or_failed_job_still_takes_its_loras_off(sd1, how):
    control = JobControl()
    plugins = sd1.engine.plugins
    plugins.register(Failing(control if how == "interrupt" else None), "failing")
    try:
        if how == "interrupt":
            assert generate(sd1.engine, "a cube <lora:a:1> <lora:b:1>", control=control).interrupted
        else:
            with pytest.raises(ExtensionError, match="boom"):
                generate(sd1.engine, "a cube <lora:a:1> <lora:b:1>", override_settings={"lora_fuse": True})
    finally:
        plugins.unregister("failing")
    assert same(image(sd1.engine, "a cube"), sd1.base)


def test_a_missing_lora_is_skipped_with_a_notice_and_recorded(sd1):
    result = generate(sd1.engine, "a cube <lora:nowhere:1>")
    assert "LoRA 'nowhere' not found in models/Lora; skipped" in result.notices
    assert 'Lora skipped: "nowhere: not found"' in result.infotexts[0] and "Lora hashes" not in result.infotexts[0]
    assert same(pixels(result.images[0].image), sd1.base)


class Trap:
    """Unpickling this would create `marker`: proof that a pickle was (not) opened."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_lora_is_refused_and_never_unpickled(sd1, tmp_path):
    marker = tmp_path / "unpickled"
    path = sd1.folder / "evil.pt"
    path.write_bytes(pickle.dumps({"lora_unet_x.lora_down.weight": Trap(marker)}))
    try:
        result = generate(sd1.engine, "a cube <lora:evil:1>")
    finally:
        path.unlink()
    assert not marker.exists()
    assert any("'evil'" in n and "refused" in n and "pickle" in n for n in result.notices), result.notices
    assert same(pixels(result.images[0].image), sd1.base)


@pytest.mark.parametrize("damage", ["truncated", "not a lora", "wrong shapes"])
def test_a_damaged_or_foreign_file_is_skipped_with_a_clear_message_and_the_job_runs(sd1, damage):
    path = sd1.folder / "damaged.safetensors"
    if damage == "truncated":
        good = (sd1.folder / "a.safetensors").read_bytes()
        path.write_bytes(good[: len(good) // 2])
        expected = "truncated"
    elif damage == "not a lora":
        lf.write(sd1.folder, "damaged", {"model.diffusion_model.out.2.weight": torch.zeros(4, 8, 3, 3)})
        expected = "not a LoRA layout"
    else:  # a LoRA for another model of the same layout: the widths do not fit
        lf.write(sd1.folder, "damaged", {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
                                         ".lora_down.weight": torch.zeros(4, 320),
                                         "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
                                         ".lora_up.weight": torch.zeros(320, 4)})
        expected = "does not fit this model"
    try:
        result = generate(sd1.engine, "a cube <lora:damaged:1> <lora:a:0>")
    finally:
        path.unlink()
    notice = next(n for n in result.notices if "'damaged'" in n)
    assert expected in notice and (damage == "truncated" or str(path) in notice), notice
    assert same(pixels(result.images[0].image), sd1.base)


def test_unloading_the_model_drops_its_loras(sd1):
    from extensions.lora import adapters

    model = sd1.engine.manager.load(None)
    generate(sd1.engine, "a cube <lora:a:1>")
    assert model.pipeline.unet in adapters._MODELS
    sd1.engine.manager.unload(model.entry)  # model_unloaded
    assert model.pipeline.unet not in adapters._MODELS
    assert same(image(sd1.engine, "a cube"), sd1.base)  # a fresh load, no LoRA left anywhere
    assert not same(image(sd1.engine, "a cube <lora:a:1>"), sd1.base)
