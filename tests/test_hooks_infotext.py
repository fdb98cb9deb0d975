"""The hooks around a job's text and files: infotext_params / infotext_pasted (a round trip through the
PNG), arguments old extensions leave out, and before_image_saved / image_saved. Fixtures: test_hooks.py."""

from __future__ import annotations

from PIL import Image

from engine_helpers import pixels
from test_hooks import engine, request, run, use  # noqa: F401 (fixtures)
from webui import hookimpl
from webui.generation.infotext import read_infotext
from webui.generation.params import request_from_infotext
from webui.models.manager import LoadedModel


class Caption:
    """The tutorial's round trip: a request option written to the infotext and read back."""

    def __init__(self):
        self.pasted: list[dict] = []

    @hookimpl
    def infotext_params(self, request, model, manager):
        assert isinstance(model, LoadedModel) and manager is not None
        text = request.extensions.get("caption", {}).get("text")
        return {"Caption": text, "Caption font": None, "VAE": "from-an-extension.safetensors"}

    @hookimpl
    def infotext_pasted(self, params, request):
        self.pasted.append(dict(params))
        if "Caption" in params:
            request.extensions["caption"] = {"text": params.pop("Caption")}


def test_infotext_params_round_trip_through_infotext_pasted(engine, use):
    caption = use(Caption())
    result = run(engine, extensions={"caption": {"text": "hi, there: you"}})
    text = result.infotexts[0]
    assert 'Caption: "hi, there: you"' in text and "Caption font" not in text  # quoted; None left out
    order = [text.index(k) for k in ("Size: ", "Model hash: ", "Model: ", "VAE: ", "Caption: ", "Version: ")]
    assert order == sorted(order)  # A1111 keys in A1111's place, even from a third-party extension

    pasted = request_from_infotext(text, engine.plugins)
    assert set(caption.pasted[0]) == {"Model hash", "Model", "VAE", "Caption"}  # only what the core left
    assert pasted.request.extensions["caption"] == {"text": "hi, there: you"}
    assert "Caption" not in pasted.unknown and pasted.request.checkpoint == "tiny"
    pasted.request.extensions["checkpoints"] = {}  # the VAE this test wrote into the text does not exist
    again = engine.generate(pasted.request)
    assert (pixels(again.images[0].image) == pixels(result.images[0].image)).all()


def test_infotext_pasted_gets_the_manager_and_its_notices_reach_the_caller(engine, use):
    class Checking:
        @hookimpl
        def infotext_pasted(self, params, manager, notices):
            if "Needs" in params:
                needed = params.pop("Needs")
                if not any(e.model_name == needed for e in manager.checkpoints()):
                    notices.append(f"{needed} is not installed")

    use(Checking())
    pasted = request_from_infotext("a cat\nSteps: 2, Sampler: Euler, CFG scale: 7, Needs: nowhere", engine.plugins, engine.manager)
    assert pasted.notices == ["nowhere is not installed"] and "Needs" not in pasted.unknown
    assert request_from_infotext("a cat\nSteps: 2, Sampler: Euler, CFG scale: 7, Needs: tiny", engine.plugins, engine.manager).notices == []


def test_old_style_extensions_naming_fewer_arguments_still_work(engine, use):
    calls = []

    class OldStyle:
        @hookimpl
        def infotext_params(self, request):
            return {"Old": "yes"}

        @hookimpl
        def after_denoising(self, latents):
            calls.append(tuple(latents.shape))

        @hookimpl
        def step_end(self):
            calls.append("step")

    use(OldStyle())
    result = run(engine)
    assert calls == ["step", "step", (1, 4, 8, 8)] and "Old: yes" in result.infotexts[0]


def test_before_image_saved_edits_the_file_and_image_saved_gets_its_path(engine, use, tmp_path):
    seen, saved = [], []

    class Stamp:
        @hookimpl
        def before_image_saved(self, params):
            seen.append((params.seed, params.format, params.request.seed, params.skip, params.extra))
            params.infotext += ", Stamp: yes"
            params.folder = tmp_path / "stamped"

        @hookimpl
        def image_saved(self, path, request):
            saved.append((path, path.is_file(), request.seed))

    use(Stamp())
    (item,) = run(engine).images
    assert seen == [(7, "png", 7, False, {})]
    assert saved == [(item.path, True, 7)] and item.path.parent == tmp_path / "stamped"
    assert read_infotext(Image.open(item.path)).endswith(", Stamp: yes")
    assert "Stamp" not in item.infotext  # the edit is for the file; the caller gets the image as generated


def test_skip_keeps_the_image_off_disk_but_returns_it(engine, use):
    saved = []

    class Skip:
        @hookimpl
        def before_image_saved(self, params):
            params.skip = True

        @hookimpl
        def image_saved(self, path):
            saved.append(path)

    outputs = engine.manager.paths.outputs_dir
    before = sorted(outputs.rglob("*.png"))
    use(Skip())
    (item,) = run(engine).images
    assert item.image.size == (64, 64) and item.path is None
    assert sorted(outputs.rglob("*.png")) == before and saved == []

