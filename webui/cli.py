"""`easel` command line: serve | generate | models | extensions | download.

Flags use A1111's names so existing launch scripts keep working."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading

from webui import __version__
from webui.cpu_memory import prefer_huge_pages
from webui.settings import Paths, RuntimeSettings


def _path_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="base folder for models/, outputs/, cache/ (an A1111 install works)")
    p.add_argument("--ckpt-dir", help="extra folder of checkpoints, searched recursively")
    p.add_argument("--lora-dir", help="extra folder of LoRAs")
    p.add_argument("--vae-dir", help="extra folder of VAEs")


def _paths(args: argparse.Namespace) -> Paths:
    return Paths.from_flags(args.data_dir, args.ckpt_dir, args.lora_dir, args.vae_dir)


def _human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def cmd_models(args: argparse.Namespace) -> int:
    from webui.models.hashes import HashCache
    from webui.models.registry import CheckpointRegistry

    paths = _paths(args)
    registry = CheckpointRegistry(paths.ckpt_dirs, HashCache(paths.cache_dir / "hashes.json"))
    entries = registry.scan()
    if args.hash:
        entries = [registry.with_hash(e) for e in entries]
    if args.json:
        print(json.dumps([e.to_json() for e in entries], indent=1))
        return 0
    if not entries:
        print(f"no checkpoints in {', '.join(map(str, paths.ckpt_dirs))}", file=sys.stderr)
        return 0
    rows = [("NAME", "FAMILY", "PRED", "HASH", "SIZE", "FORMAT")]
    for e in entries:
        j = e.to_json()
        rows.append((j["name"], j["family"], j["prediction"] or "-", j["hash"], _human(j["size"]), j["format"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    for e in entries:
        if not e.detection.known:
            print(f"{e.name}: {e.detection.family}: {e.detection.reason}", file=sys.stderr)
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from webui.models.download import DownloadError, download

    try:
        path = download(args.name, _paths(args), progress=not args.quiet)
    except DownloadError as e:
        print(f"easel download: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


def quiet_libraries() -> None:
    """diffusers/transformers warnings and progress bars speak to developers; users get Easel's log."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def cmd_serve(args: argparse.Namespace) -> int:
    from webui.config import Config
    from webui.core_settings import CORE_SETTINGS, apply_to_engine
    from webui.generation.engine import Engine
    from webui.models.manager import ModelManager
    from webui.server import ServeError, ServeOptions, prepare, serve

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    options = ServeOptions(listen=args.listen, port=args.port, share=args.share, gradio_auth=args.gradio_auth,
                           gradio_auth_path=args.gradio_auth_path, api_auth=args.api_auth,
                           insecure_no_auth=args.insecure_no_auth, api=args.api or args.nowebui,
                           nowebui=args.nowebui, theme=args.theme or "",
                           cors_allow_origins=tuple(o.strip() for o in (args.cors_allow_origins or "").split(",") if o.strip()),
                           cmd_flags=tuple(sorted((k, v) for k, v in vars(args).items()
                                                  if k not in ("func", "gradio_auth", "api_auth") and _jsonable(v))))
    say = lambda text: print(text, flush=True)  # noqa: E731
    try:
        listening = prepare(options, say)
    except ServeError as e:
        print(f"easel serve: {e}", file=sys.stderr)
        return 2
    quiet_libraries()
    paths = _paths(args)
    plugins = _plugins(args, paths)
    for f in plugins.failures:
        print(f"extension {f.name!r} failed to load and is disabled: {f.error}", file=sys.stderr)
    config = Config(paths.data_dir / "config.json", [*CORE_SETTINGS, *plugins.settings()])
    engine = Engine(ModelManager(paths, _runtime(args), plugins), plugins=plugins)
    apply_to_engine(config, engine)
    config.on_change(lambda changed: apply_to_engine(config, engine))
    preload = threading.Thread(target=_preload, args=(engine,), daemon=True, name="easel-preload")
    preload.start()
    say(f"Easel {__version__}")
    code = serve(options, listening, engine, plugins, config, say)
    if preload.is_alive():  # stopped while a model was loading: don't tear torch down under that thread
        sys.stdout.flush()
        os._exit(code)
    return code


def _jsonable(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, list))


def _preload(engine) -> None:
    """Load the default model in the queue's turn while the page is already served."""
    try:
        loaded = engine.run_exclusive(engine.manager.load)
        print(f"Model ready: {loaded.entry.title} ({loaded.family.name})", flush=True)
    except Exception as e:  # the UI stays up: the user can pick another checkpoint
        print(f"The default model did not load: {type(e).__name__}: {e}", file=sys.stderr, flush=True)


def _extension_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--disable-extension", action="append", default=[], metavar="NAME",
                   help="do not load this extension (repeatable); EASEL_LOAD_PLUGINS=a,b loads only those")


def _plugins(args: argparse.Namespace, paths: Paths):
    from webui.plugins import Plugins

    return Plugins().load(folder=paths.data_dir / "extensions", disabled=args.disable_extension)


def cmd_extensions(args: argparse.Namespace) -> int:
    plugins = _plugins(args, _paths(args))
    infos = plugins.infos()
    if args.json:
        print(json.dumps([i.to_json() for i in infos], indent=1))
    else:
        for i in infos:
            print(f"{i.name} {i.version} ({i.source}): {', '.join(i.hooks)}")
    for f in plugins.failures:
        print(f"extension {f.name!r} ({f.source}) failed to load: {f.error}", file=sys.stderr)
    return 0


def _runtime_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--precision", default="float32", choices=("float32", "float16", "bfloat16"))
    p.add_argument("--medvram", action="store_true", help="CUDA: keep only the active submodel on the GPU")
    p.add_argument("--lowvram", action="store_true", help="CUDA: stream layers to the GPU (slowest, least VRAM)")


def _runtime(args: argparse.Namespace) -> RuntimeSettings:
    offload = "sequential" if args.lowvram else "model" if args.medvram else "none"
    return RuntimeSettings(device=args.device, dtype=args.precision, offload=offload)


def cmd_generate(args: argparse.Namespace) -> int:
    from webui.generate_command import run_generate

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_libraries()
    paths = _paths(args)
    return run_generate(args, paths, _runtime(args), _plugins(args, paths))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="easel", description="Easel: a local web UI for Stable Diffusion")
    parser.add_argument("--version", action="version", version=f"easel {__version__}")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="start the web UI (default)")
    _path_flags(serve)
    serve.add_argument("--listen", action="store_true", help="listen on all interfaces, not only 127.0.0.1")
    serve.add_argument("--port", type=int, default=7860, help="7860 by default; a busy port moves to the next free one")
    serve.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    serve.add_argument("--gradio-auth", metavar="USER:PASS[,USER2:PASS2]", help="require a login for the UI and API")
    serve.add_argument("--gradio-auth-path", metavar="FILE", help="read USER:PASS pairs (per line or comma) from FILE")
    serve.add_argument("--api-auth", metavar="USER:PASS[,...]", help="API credentials (default: the UI's)")
    serve.add_argument("--insecure-no-auth", action="store_true",
                       help="with --listen/--share, serve without a login (otherwise a password is generated)")
    serve.add_argument("--api", action="store_true", help="serve the A1111 API (/sdapi/v1) beside the UI")
    serve.add_argument("--nowebui", action="store_true", help="serve the API only, no UI")
    serve.add_argument("--theme", choices=("light", "dark"), help="force a theme (default: follow the browser)")
    serve.add_argument("--cors-allow-origins", metavar="URL[,URL2]", help="let these web origins call the API")
    _runtime_flags(serve)
    _extension_flags(serve)
    serve.set_defaults(func=cmd_serve)

    from webui.generate_command import add_generate_flags

    gen = sub.add_parser("generate", help="txt2img / img2img / inpaint from the terminal")
    _path_flags(gen)
    _runtime_flags(gen)
    _extension_flags(gen)
    add_generate_flags(gen)
    gen.set_defaults(func=cmd_generate)

    models = sub.add_parser("models", help="list checkpoints with family, prediction type and hash")
    _path_flags(models)
    models.add_argument("--json", action="store_true", help="a JSON list with the keys name, path, family, ...")
    models.add_argument("--hash", action="store_true", help="compute missing hashes (reads every file once)")
    models.set_defaults(func=cmd_models)

    ext = sub.add_parser("extensions", help="list loaded extensions: name, version, source, hooks")
    _path_flags(ext)
    _extension_flags(ext)
    ext.add_argument("--json", action="store_true", help="a JSON list of {name, version, source, hooks}")
    ext.set_defaults(func=cmd_extensions)

    dl = sub.add_parser("download", help="download a well-known model into the right folder")
    _path_flags(dl)
    dl.add_argument("name", help="e.g. sd15, sdxl-base, sdxl-refiner, sdxl-turbo, ssd-1b, vega, sdxl-vae-fp16-fix, taesd")
    dl.add_argument("--quiet", action="store_true", help="no progress bar")
    dl.set_defaults(func=cmd_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv = ["serve", *argv]
    args = build_parser().parse_args(argv)
    prefer_huge_pages()  # before any command imports torch
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
