"""Four ways to run one txt2img job through a running `easel serve`, for bench/ui.py.

Each `run(seed)` returns (seconds, PNG bytes of the first gallery image):
  QueueClient    Gradio's queue protocol as the page's own JavaScript speaks it: POST queue/join, read the
                 server-sent events as they arrive, fetch the gallery PNG. What the server adds, with no
                 client-side waits.
  APIClient      POST /sdapi/v1/txt2img (the server runs with --api) with save_images: the same engine in the
                 same process, no queue protocol and no streamed updates; the PNG comes base64 in the reply.
  ScriptClient   gradio_client's `predict` (what scripts use); it checks for new messages every 50 ms.
  BrowserClient  the page in Debian's chromium: the Generate click to the gallery image's `load` event,
                 timed inside the page (Playwright's own latency left out). The browser renders on the same
                 CPUs as the job. Between its runs it holds no page, so it costs the other runs nothing.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path

import httpx

CHROMIUM = "/usr/bin/chromium"
PROMPT = "a photo of a cat"


class QueueClient:
    def __init__(self, url: str, steps: int, size: int) -> None:
        self.http = httpx.Client(base_url=url, trust_env=False, timeout=600)
        endpoint = self.http.get("/gradio_api/info").json()["named_endpoints"]["/txt2img"]
        self.names = [p["parameter_name"] for p in endpoint["parameters"]]
        self.defaults = {p["parameter_name"]: p.get("parameter_default") for p in endpoint["parameters"]}
        config = self.http.get("/config").json()
        self.fn_index = next(d["id"] for d in config["dependencies"] if d.get("api_name") == "txt2img")
        self.fixed = {"prompt": PROMPT, "steps": steps, "width": size, "height": size}
        self.session = uuid.uuid4().hex

    def run(self, seed: int) -> tuple[float, bytes]:
        values = {**self.defaults, **self.fixed, "seed": seed}
        start = time.perf_counter()
        joined = self.http.post("/gradio_api/queue/join", json={
            "data": [values[n] for n in self.names], "fn_index": self.fn_index, "session_hash": self.session,
            "trigger_id": None, "event_data": None})
        joined.raise_for_status()
        with self.http.stream("GET", "/gradio_api/queue/data", params={"session_hash": self.session}) as events:
            for line in events.iter_lines():
                message = json.loads(line[5:]) if line.startswith("data:") else {}
                if message.get("msg") == "process_completed":
                    break
        output = message.get("output") or {}
        if not message.get("success") or not output.get("data") or not output["data"][2]:
            raise RuntimeError(f"the UI did not generate: {output}")
        png = self.http.get(output["data"][2][0]["image"]["url"]).content
        return time.perf_counter() - start, png

    def close(self) -> None:
        self.http.close()


class APIClient:
    def __init__(self, url: str, steps: int, size: int) -> None:
        self.http = httpx.Client(base_url=url, trust_env=False, timeout=600)
        self.fixed = {"prompt": PROMPT, "steps": steps, "width": size, "height": size, "save_images": True,
                      "sampler_name": "DPM++ 2M"}  # the UI's default; the API's is A1111's Euler

    def run(self, seed: int) -> tuple[float, bytes]:
        start = time.perf_counter()
        reply = self.http.post("/sdapi/v1/txt2img", json={**self.fixed, "seed": seed})
        reply.raise_for_status()
        png = base64.b64decode(reply.json()["images"][0])
        return time.perf_counter() - start, png

    def close(self) -> None:
        self.http.close()


class ScriptClient:
    def __init__(self, url: str, steps: int, size: int, downloads: Path) -> None:
        from gradio_client import Client

        self.client = Client(url, verbose=False, download_files=str(downloads))
        self.fixed = {"prompt": PROMPT, "steps": steps, "width": size, "height": size}

    def run(self, seed: int) -> tuple[float, bytes]:
        start = time.perf_counter()
        progress, _, gallery, _ = self.client.predict(**self.fixed, seed=seed, api_name="/txt2img")
        if "1 image" not in progress:
            raise RuntimeError(f"the UI did not generate: {progress}")
        png = Path(gallery[0]["image"]).read_bytes()
        return time.perf_counter() - start, png

    def close(self) -> None:
        self.client.close()


# Resolves with [ms from the Generate click to the gallery image's load event, its URL].
_TIMER_JS = """() => { window.__easelDone = new Promise(resolve => {
  const gallery = document.querySelector('#txt2img_gallery');
  let clicked = null;
  document.querySelector('#txt2img_generate').addEventListener('click', () => { clicked = performance.now(); },
                                                                {capture: true, once: true});
  const watch = new MutationObserver(() => {
    const img = gallery.querySelector('img');
    if (clicked === null || !img) return;
    watch.disconnect();
    const done = () => resolve([performance.now() - clicked, img.src]);
    if (img.complete && img.naturalWidth) done(); else img.addEventListener('load', done, {once: true});
  });
  watch.observe(gallery, {childList: true, subtree: true});
}); }"""


class BrowserClient:
    def __init__(self, url: str, steps: int, size: int) -> None:
        from playwright.sync_api import sync_playwright

        self.url, self.steps, self.size = url, steps, size
        self.playwright = sync_playwright().start()
        self.browser = self.playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        self.page = self.browser.new_page(viewport={"width": 1280, "height": 800})

    def run(self, seed: int) -> tuple[float, bytes]:
        page = self.page
        page.goto(self.url)
        page.wait_for_selector("#txt2img_prompt textarea", timeout=120_000)
        page.locator("#txt2img_prompt textarea").fill(PROMPT)
        for elem_id, value in (("steps", self.steps), ("width", self.size), ("height", self.size), ("seed", seed)):
            box = page.locator(f"#txt2img_{elem_id} input").first
            box.fill(str(value))
            box.press("Tab")
        time.sleep(1.0)  # the page settles, as it has when a user clicks
        page.evaluate(_TIMER_JS)
        page.click("#txt2img_generate")
        ms, src = page.evaluate("window.__easelDone")
        png = page.request.get(src).body()
        page.goto("about:blank")  # no page, no work, during the other runs
        return ms / 1000, png

    def close(self) -> None:
        self.browser.close()
        self.playwright.stop()
