"""Saved settings in A1111's `config.json`, on real files: defaults, checked updates, A1111 keys kept, an
unreadable file never overwritten, and saved values reaching the engine's jobs."""

from __future__ import annotations

import json
import os
import re

import pytest

from engine_helpers import make_engine
from webui import hookimpl
from webui.config import Config, SettingsError, check_value
from webui.core_settings import CORE_KEYS, CORE_SETTINGS, apply_to_engine
from webui.generation.request import GenerationRequest
from webui.hooktypes import Setting

GREETING = Setting("hello_greeting", "Hello", "Greeting", section="Hello")
STRENGTH = Setting("hello_strength", 0.5, "Strength", section="Hello", minimum=0.0, maximum=1.0)
SETTINGS = (*CORE_SETTINGS, GREETING, STRENGTH)
DEFAULTS = {s.key: s.default for s in SETTINGS}
A1111 = {  # a slice of a real A1111 config.json, with values of every JSON kind
    "sd_model_checkpoint": "v1-5-pruned-emaonly.safetensors [6ce0161689]",
    "quicksettings_list": ["sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers"],
    "sd_vae": "Automatic", "sd_checkpoint_cache": 0, "eta_noise_seed_delta": 0, "img2img_color_correction": False,
    "outdir_samples": "", "jpeg_quality": 80, "s_noise": 1.0, "ui_reorder_list": [], "extra": {"ñ": None, "x": 1.5},
    "samples_format": "jpg", "CLIP_stop_at_last_layers": 2,
}


@pytest.fixture
def path(tmp_path):
    return tmp_path / "config.json"


def write(path, value) -> bytes:
    data = json.dumps(value, indent=4, ensure_ascii=False).encode("utf-8")
    path.write_bytes(data)
    return data


def test_defaults_when_there_is_no_file(path):
    config = Config(path, SETTINGS)
    assert config.values == DEFAULTS and config.load_error is None
    assert config["samples_format"] == "png" and config.get("nope", 7) == 7
    assert not path.exists()  # reading never creates the file


def test_update_saves_and_a_new_config_reads_it_back(path):
    config = Config(path, SETTINGS)
    changes = {"samples_format": "webp", "samples_save": False, "CLIP_stop_at_last_layers": 2,
               "hello_greeting": "Hi", "hello_strength": 0.25}
    assert config.update(changes) == changes
    assert config.values == {**DEFAULTS, **changes}
    assert Config(path, SETTINGS).values == {**DEFAULTS, **changes}
    assert json.loads(path.read_text()) == changes
    assert os.listdir(path.parent) == ["config.json"]  # the temp file was renamed, none left behind


def test_a1111_keys_are_kept_byte_equal(path):
    write(path, A1111)
    config = Config(path, SETTINGS)
    assert config["samples_format"] == "jpg" and config["CLIP_stop_at_last_layers"] == 2
    config.update({"samples_format": "webp", "hello_greeting": "Hi"})
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["samples_format"] == "webp" and saved["hello_greeting"] == "Hi"
    for key, value in A1111.items():
        if key != "samples_format":
            assert json.dumps(saved[key], sort_keys=True) == json.dumps(value, sort_keys=True), key
    assert set(saved) == set(A1111) | {"hello_greeting"}


def test_keys_another_program_saved_since_loading_are_kept(path):
    """A1111 sharing the data dir may save while Easel runs; Easel's next save must not revert it."""
    write(path, A1111)
    config = Config(path, SETTINGS)
    write(path, {**A1111, "sd_model_checkpoint": "other.safetensors", "new_a1111_key": [1, 2]})
    config.update({"samples_save": False})
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["sd_model_checkpoint"] == "other.safetensors" and saved["new_a1111_key"] == [1, 2]
    assert saved["samples_save"] is False


@pytest.mark.parametrize("key, value", [
    ("samples_save", "yes"), ("samples_save", 1), ("samples_format", "bmp"), ("samples_format", 3),
    ("CLIP_stop_at_last_layers", 13), ("CLIP_stop_at_last_layers", 0), ("CLIP_stop_at_last_layers", 3.5),
    ("CLIP_stop_at_last_layers", True), ("CLIP_stop_at_last_layers", float("inf")), ("CLIP_stop_at_last_layers", "two"),
    ("show_progress_every_n_steps", -1), ("hello_strength", float("nan")), ("hello_strength", 1.5),
    ("hello_greeting", None), ("no_such_setting", 1),
])
def test_a_refused_value_changes_nothing(path, key, value):
    write(path, A1111)
    before = path.read_bytes()
    config = Config(path, SETTINGS)
    values = dict(config.values)
    heard = []
    config.on_change(heard.append)
    with pytest.raises(SettingsError, match=re.escape(repr(key))):
        config.update({"samples_format": "webp", "hello_greeting": "Hi", key: value})  # the valid ones too
    assert path.read_bytes() == before and config.values == values and heard == []


@pytest.mark.parametrize("content", [b"{not json", b'["a", "list"]', b'"text"', b"\xff\xfe{}", b""])
def test_an_unreadable_file_gives_defaults_and_is_never_overwritten(path, content):
    path.write_bytes(content)
    config = Config(path, SETTINGS)
    assert config.values == DEFAULTS
    assert config.load_error and str(path) in config.load_error
    with pytest.raises(SettingsError, match="config.json"):
        config.update({"samples_format": "jpg"})
    assert path.read_bytes() == content and config["samples_format"] == "png"


def test_a_folder_in_place_of_the_file_is_a_load_error(path):
    path.mkdir()
    config = Config(path, SETTINGS)
    assert config.values == DEFAULTS and config.load_error
    with pytest.raises(SettingsError):
        config.update({"samples_format": "jpg"})


def test_bad_stored_values_fall_back_to_defaults_and_the_rest_is_kept(path):
    write(path, {**A1111, "samples_format": "bmp", "samples_save": False, "show_progress_every_n_steps": "often",
                 "hello_strength": 7, "hello_greeting": "Hi"})
    config = Config(path, SETTINGS)
    assert config.load_error is None
    assert config.values == {**DEFAULTS, "samples_save": False, "CLIP_stop_at_last_layers": 2, "hello_greeting": "Hi",
                             "sd_model_checkpoint": A1111["sd_model_checkpoint"]}  # A1111's choice carries over


def test_listeners_hear_only_changes_and_a_no_op_update_writes_nothing(path):
    config = Config(path, SETTINGS)
    heard = []
    config.on_change(heard.append)
    changed = config.update({"samples_format": "jpg", "samples_save": True, "hello_strength": 0.5})
    assert changed == {"samples_format": "jpg"}
    assert heard == [{"samples_format": "jpg"}]
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = path.read_bytes()
    assert config.update({"samples_format": "jpg", "hello_strength": 1 / 2}) == {}
    assert config.update({}) == {}
    assert heard == [{"samples_format": "jpg"}]
    assert path.read_bytes() == before and path.stat().st_mtime_ns == 1_000_000_000


def test_value_conversions():
    clip = CORE_SETTINGS[2]
    assert clip.key == "CLIP_stop_at_last_layers"
    assert check_value(clip, 3.0) == 3 and type(check_value(clip, 3.0)) is int
    for bad in (3.5, True, float("nan"), float("inf"), 10**400, [3]):
        with pytest.raises(SettingsError, match="CLIP_stop_at_last_layers"):
            check_value(clip, bad)
    assert check_value(CORE_SETTINGS[0], False) is False
    for bad in ("yes", "true", 1, None):
        with pytest.raises(SettingsError, match="samples_save"):
            check_value(CORE_SETTINGS[0], bad)
    assert check_value(STRENGTH, 1) == 1.0 and type(check_value(STRENGTH, 1)) is float
    assert check_value(STRENGTH, 0) == 0.0


class Greeter:
    """An extension declaring `hello_greeting` and recording what each job's request carries."""

    def __init__(self):
        self.seen = []

    @hookimpl
    def register_settings(self, register):
        register(GREETING)

    @hookimpl
    def before_generate(self, request):
        self.seen.append(request.override_settings.get("hello_greeting"))


@pytest.fixture
def engine(tmp_path, tiny_checkpoint):
    engine = make_engine(tmp_path / "data", {"tiny.safetensors": tiny_checkpoint("sd1")}, outdir=tmp_path / "out")
    greeter = Greeter()
    engine.plugins.register(greeter, name="greeter")
    engine.greeter = greeter
    yield engine
    engine.plugins.unregister("greeter")


def options(engine) -> tuple:
    return engine.options.save_images, engine.options.samples_format, engine.options.preview_every


def request(**kw) -> GenerationRequest:
    return GenerationRequest(prompt="x", steps=1, width=64, height=64, seed=1, **kw)


def test_apply_to_engine_sets_options_and_extension_settings(engine, path):
    config = Config(path, [*CORE_SETTINGS, *engine.plugins.settings()])
    assert "hello_greeting" in config.settings
    apply_to_engine(config, engine)
    assert options(engine) == (True, "png", 2)
    assert engine.options.outdir is not None  # the other options are kept
    assert engine.settings == {"hello_greeting": "Hello", "lora_fuse": False}
    config.on_change(lambda changed: apply_to_engine(config, engine))
    config.update({"samples_save": False, "samples_format": "webp", "show_progress_every_n_steps": 0,
                   "CLIP_stop_at_last_layers": 2, "hello_greeting": "Hi"})
    assert options(engine) == (False, "webp", 0)
    assert engine.settings == {"hello_greeting": "Hi", "lora_fuse": False} and not CORE_KEYS & set(engine.settings)


def test_a_saved_extension_setting_reaches_the_job(engine, path):
    config = Config(path, [*CORE_SETTINGS, *engine.plugins.settings()])
    config.update({"hello_greeting": "Bonjour", "samples_save": False})
    apply_to_engine(Config(path, config.settings.values()), engine)  # as after a restart
    engine.generate(request())
    mine = request(override_settings={"hello_greeting": "Hey"})
    engine.generate(mine)
    assert engine.greeter.seen == ["Bonjour", "Hey"]
    assert mine.override_settings == {"hello_greeting": "Hey"}  # the caller's request is not changed


def test_samples_format_setting_changes_the_saved_file(engine, path, tmp_path):
    config = Config(path, [*CORE_SETTINGS, *engine.plugins.settings()])
    config.on_change(lambda changed: apply_to_engine(config, engine))
    config.update({"samples_format": "jpg"})
    result = engine.generate(request())
    assert [p.suffix for p in result.paths] == [".jpg"]
    assert result.paths[0].is_file() and result.paths[0].parent == tmp_path / "out"
    assert result.paths[0].read_bytes()[:3] == b"\xff\xd8\xff"  # a real JPEG, not a renamed PNG
