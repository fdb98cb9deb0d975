"""How long `easel serve` takes to answer, and what the web UI adds to one generation.

Part 1, startup with the built-in demo model (a fresh temp --data-dir, no checkpoint), --runs times:
  imports      `python -c "import gradio, diffusers, torch"` in a fresh process: the floor
  URL line     `easel serve` started -> "Running on local URL" printed
  GET / 200    started -> the page answers 200 (polled from the start; goal < 8 s)
  model ready  started -> "Model ready" printed (the default model loads in the background)
  Run 1 is a first start: it also writes the demo checkpoints. Medians are over all runs.
Part 2, one txt2img job (demo SD1, --size, --steps, one fixed seed per rep), each way in turn, never at once:
  HTTP           Gradio's queue protocol as the page's JavaScript speaks it (join, server-sent events as they
                 arrive, the gallery PNG fetched): what the UI server adds. The goal (< 1.03) is read here.
  API            POST /sdapi/v1/txt2img with save_images to the same server (started with --api): the same
                 engine, previews and saving in the same process, without Gradio's queue and streamed updates.
                 HTTP / API is the UI's overhead free of the two processes' differences.
  gradio_client  `predict(..., api_name="/txt2img")`, as scripts call it (it looks for messages every 50 ms)
  browser        Debian's chromium: Generate click -> gallery image loaded, timed in the page; the browser
                 draws on the same 2 CPUs as the job (--no-browser leaves it out)
  direct         `Engine.generate` in this process on the same data dir with the server's defaults
                 (save images, a live preview every 2 steps: webui/core_settings.py): the baseline
  bench/ui_clients.py has the clients. One warm-up each (all must give the direct run's pixels and infotext).
  ratio = median / direct's median; pair ratio = median of the per-rep ratios (less sensitive to drift).
  --model sd15 runs part 2 on a full-size SD1.5 layout with random weights instead of the demo model
  (bench/load.py's, linked from --sd15-dir where bench/overhead.py and bench/api.py keep it).
Usage: python bench/ui.py [--runs 3] [--repeats 5] [--steps 8] [--size 512] [--model demo|sd15] [--no-browser]
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class Serving:
    """`easel serve --data-dir D --port P` in a subprocess. `seen[text]`: seconds from the start to the
    first output line holding `text`; `page_s`: seconds until GET / answered 200."""

    def __init__(self, data_dir: Path, watch: tuple[str, ...], flags: tuple[str, ...] = ()) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port: int = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.watch = watch
        self.seen: dict[str, float] = {}
        self.lines: list[str] = []
        self.page_s: float | None = None
        cmd = [sys.executable, "-m", "webui.cli", "serve", "--data-dir", str(data_dir), "--port", str(self.port),
               *flags]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
        self.start = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._poll_page, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            now = time.perf_counter() - self.start
            self.lines.append(line)
            for text in self.watch:
                if text in line:
                    self.seen.setdefault(text, now)

    def _poll_page(self) -> None:
        with httpx.Client(trust_env=False, timeout=300) as client:
            while self.proc.poll() is None:
                try:
                    if client.get(self.url + "/").status_code == 200:
                        self.page_s = time.perf_counter() - self.start
                        return
                except httpx.TransportError:  # not listening yet
                    pass
                time.sleep(0.02)

    def wait(self, timeout: float = 300) -> None:
        end = time.monotonic() + timeout
        while len(self.seen) < len(self.watch) or self.page_s is None:
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise RuntimeError("easel serve did not get ready:\n" + "".join(self.lines))
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def import_seconds() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import gradio, diffusers, torch"], cwd=ROOT, check=True)
    return time.perf_counter() - start


def startup(data_dir: Path, runs: int) -> None:
    url_line, ready = "Running on local URL", "Model ready"
    print(f"\n== Startup: `easel serve`, demo model, {runs} runs (seconds from start) ==")
    print(f"{'run':>5} {'imports':>8} {'URL line':>9} {'GET / 200':>10} {'model ready':>12}")
    rows: list[tuple[float, float, float, float]] = []
    for run in range(1, runs + 1):
        imports = import_seconds()
        server = Serving(data_dir, (url_line, ready))
        try:
            server.wait()
        finally:
            server.stop()
        rows.append((imports, server.seen[url_line], server.page_s or 0.0, server.seen[ready]))
        note = "  (first start: writes the demo checkpoints)" if run == 1 else ""
        print(f"{run:5d} " + " ".join(f"{v:{w}.2f}" for v, w in zip(rows[-1], (8, 9, 10, 12))) + note, flush=True)
    med = [statistics.median(col) for col in zip(*rows)]
    print(f"{'med.':>5} " + " ".join(f"{v:{w}.2f}" for v, w in zip(med, (8, 9, 10, 12))))
    print(f"GET / 200 median {med[2]:.2f} s = imports {med[0]:.2f} s + {med[2] - med[0]:.2f} s; "
          f"goal < 8 s -> {'met' if med[2] < 8 else 'NOT met'}")


def per_generation(data_dir: Path, args: argparse.Namespace) -> None:
    from PIL import Image

    from bench.ui_clients import CHROMIUM, APIClient, BrowserClient, QueueClient, ScriptClient
    from webui.config import Config
    from webui.core_settings import CORE_SETTINGS, apply_to_engine
    from webui.generation.engine import Engine, EngineOptions
    from webui.generation.infotext import read_infotext
    from webui.generation.request import GenerationRequest
    from webui.models.manager import ModelManager
    from webui.plugins import Plugins
    from webui.settings import Paths

    if args.model == "sd15":
        from bench.overhead import prepare

        full = prepare("sd15", Path(args.sd15_dir))
        folder = data_dir / "models" / "Stable-diffusion"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / full.name).symlink_to(full)
    print(f"\n== Per generation: txt2img {args.size}x{args.size}, {args.steps} steps, {args.model} SD1, "
          f"{args.repeats} interleaved reps ==")
    server = Serving(data_dir, ("Running on local URL", "Model ready"), ("--api",))
    clients: dict = {}
    try:
        server.wait()
        clients["HTTP"] = QueueClient(server.url, args.steps, args.size)
        clients["API"] = APIClient(server.url, args.steps, args.size)
        clients["gradio_client"] = ScriptClient(server.url, args.steps, args.size, data_dir / "client-downloads")
        if args.browser and Path(CHROMIUM).exists():
            clients["browser"] = BrowserClient(server.url, args.steps, args.size)
        paths = Paths.from_flags(data_dir=data_dir)
        plugins = Plugins().load(folder=paths.data_dir / "extensions")  # as `easel serve` builds them
        options = EngineOptions(save_images=True, preview_every=2)
        engine = Engine(ModelManager(paths, plugins=plugins), options, plugins)
        apply_to_engine(Config(paths.data_dir / "config.json", [*CORE_SETTINGS, *plugins.settings()]), engine)
        assert engine.options == options, f"the server's defaults changed: {engine.options}"

        def direct(seed: int) -> tuple[float, bytes]:
            req = GenerationRequest(prompt="a photo of a cat", steps=args.steps, width=args.size, height=args.size,
                                    seed=seed)
            start = time.perf_counter()
            item = engine.generate(req).images[0]
            seconds = time.perf_counter() - start
            assert item.path is not None, "the direct engine did not save"
            return seconds, item.path.read_bytes()

        runs = {name: client.run for name, client in clients.items()} | {"direct": direct}
        made = Image.open(io.BytesIO(direct(1)[1]))  # warm-up: first-call allocations, the model hash
        for name, run in runs.items():
            shown = Image.open(io.BytesIO(run(1)[1]))
            if shown.tobytes() != made.tobytes() or read_infotext(shown) != read_infotext(made):
                raise SystemExit(f"not the same job:\n{name}: {read_infotext(shown)}\ndirect: {read_infotext(made)}")
        print(f"warm-up: same pixels and infotext every way: {read_infotext(made).splitlines()[-1]}")
        times: dict[str, list[float]] = {name: [] for name in runs}
        for rep in range(args.repeats):
            for name, run in runs.items():
                times[name].append(run(100 + rep)[0])
    finally:
        for client in clients.values():
            client.close()
        server.stop()
    report(times)


def report(times: dict[str, list[float]]) -> None:
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"{'':14} {'median s':>9} {'ratio':>6} {'adds ms':>8} {'pair ratio':>10}   all runs, s")
    for name, t in times.items():
        paired = statistics.median(u / d for u, d in zip(t, times["direct"]))
        print(f"{name:14} {med[name]:9.3f} {med[name] / med['direct']:6.3f} {(med[name] - med['direct']) * 1000:8.0f} "
              f"{paired:10.3f}   {' '.join(f'{x:.3f}' for x in t)}")
    ratio = med["HTTP"] / med["direct"]
    print(f"UI overhead (HTTP: the server's queue, streaming, saving and serving the PNG): ratio {ratio:.3f}; "
          f"goal < 1.03 -> {'met' if ratio < 1.03 else 'NOT met'}")
    same = med["HTTP"] / med["API"]
    paired = statistics.median(u / a for u, a in zip(times["HTTP"], times["API"]))
    print(f"UI over the API in the same server process (Gradio's queue and streamed updates against one POST): "
          f"ratio {same:.3f}, pair ratio {paired:.3f}; goal < 1.03 -> {'met' if same < 1.03 else 'NOT met'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="server starts timed")
    p.add_argument("--repeats", type=int, default=5, help="UI/direct pairs timed")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--model", choices=("demo", "sd15"), default="demo")
    p.add_argument("--sd15-dir", default="/tmp/easel-bench-overhead")
    p.add_argument("--no-browser", dest="browser", action="store_false", help="leave out the chromium runs")
    args = p.parse_args()
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from webui.cpu_memory import prefer_huge_pages

    prefer_huge_pages()  # the direct engine allocates like the `easel serve` it is compared with
    import torch

    from webui.cli import quiet_libraries

    quiet_libraries()
    logging.basicConfig(level=logging.ERROR)  # the in-process manager's "no checkpoint, demo models" notice
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="easel-bench-ui-") as temp:
        data_dir = Path(temp)
        if args.runs:
            startup(data_dir, args.runs)
        if args.repeats:
            per_generation(data_dir, args)


if __name__ == "__main__":
    main()
