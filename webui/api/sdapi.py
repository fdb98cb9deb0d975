"""A1111's generation routes: txt2img, img2img (inpaint when a mask is sent), progress, interrupt, skip,
png-info, and Easel's `GET /easel/v1/jobs/{id}`.

Generation runs in a worker thread of its own pool (not Starlette's 40-thread pool, which twenty
waiting clients would fill and so starve /progress), after the job has taken its place in the queue
in the event loop: requests run in the order they arrived."""

from __future__ import annotations

import json
import logging

import anyio
import fastapi
from fastapi.responses import JSONResponse

from webui.api.context import APIContext
from webui.api.images import ImageFieldError, decode_image, encode_png
from webui.api.jobs import DuplicateJobId
from webui.api.schemas import (
    GenerationResponse,
    Img2ImgRequest,
    JobResponse,
    PNGInfoRequest,
    PNGInfoResponse,
    ProgressResponse,
    ProgressState,
    Txt2ImgRequest,
)
from webui.api.translate import FieldError, info, parameters, to_request
from webui.generation.infotext import parse_infotext, read_infotext
from webui.generation.prompt_parser import PromptError
from webui.generation.request import Mode, RequestError
from webui.generation.samplers import SamplerError
from webui.models.header import CheckpointError

log = logging.getLogger(__name__)
# A request's own problems (bad fields, an unknown sampler, a refiner on the wrong model): extensions raise
# ValueError for those too (see webui/plugins.py), so every ValueError is the client's, not the server's.
CLIENT_ERRORS = (FieldError, ImageFieldError, RequestError, SamplerError, PromptError, ValueError)


class APIError(Exception):
    def __init__(self, status: int, detail: str, error: str):
        super().__init__(detail)
        self.status, self.detail, self.error = status, detail, error


def error_response(request: fastapi.Request, exc: APIError) -> JSONResponse:
    """A1111's error body shape: {"error", "detail", ...}; `detail` names the field."""
    return JSONResponse({"error": exc.error, "detail": exc.detail}, status_code=exc.status)


def add_generation_routes(app: fastapi.FastAPI, ctx: APIContext) -> None:
    async def txt2img(body: Txt2ImgRequest) -> GenerationResponse:
        """A1111's txt2img."""
        return await generate(ctx, body, Mode.TXT2IMG)

    async def img2img(body: Img2ImgRequest) -> GenerationResponse:
        """A1111's img2img; with `mask`, inpaint."""
        return await generate(ctx, body, Mode.IMG2IMG)

    async def progress(skip_current_image: bool = False) -> ProgressResponse:
        """The running job (UI or API): fraction, ETA, steps, and the latest live preview."""
        return progress_of(ctx, skip_current_image)

    async def interrupt() -> None:
        """Stop the running job after its current step; the images done so far are returned."""
        current = ctx.engine.queue.current
        if current is not None:
            current.interrupt()

    async def skip() -> None:
        """Drop the running job's current batch and go on with the next."""
        current = ctx.engine.queue.current
        if current is not None:
            current.skip()

    async def png_info(body: PNGInfoRequest) -> PNGInfoResponse:
        """The infotext of an image, raw and split into fields as A1111 does."""
        try:
            image = decode_image(body.image, "image")
        except ImageFieldError as e:
            raise APIError(422, str(e), "ImageFieldError") from None
        text = read_infotext(image) or ""
        items = {k: v for k, v in image.info.items() if k != "parameters" and isinstance(v, (str, int, float))}
        return PNGInfoResponse(info=text, items=items, parameters=generation_parameters(text) if text else {})

    async def job(job_id: str) -> JobResponse:
        """An API job's state: queued (with its position), running, done, failed or interrupted."""
        record = ctx.board.get(job_id)
        if record is None:
            raise APIError(404, f"no job {job_id!r} (ids are kept for the last 1000 jobs)", "NotFound")
        return JobResponse(id=record.id, state=record.state, position=ctx.board.position(record),
                           progress=record.fraction, eta_relative=record.eta, queued_at=record.queued_at,
                           started_at=record.started_at, finished_at=record.finished_at, error=record.error,
                           images=record.images)

    app.add_exception_handler(APIError, error_response)
    add = app.add_api_route
    add("/sdapi/v1/txt2img", txt2img, methods=["POST"], response_model=GenerationResponse)
    add("/sdapi/v1/img2img", img2img, methods=["POST"], response_model=GenerationResponse)
    add("/sdapi/v1/progress", progress, methods=["GET"], response_model=ProgressResponse)
    add("/sdapi/v1/interrupt", interrupt, methods=["POST"])
    add("/sdapi/v1/skip", skip, methods=["POST"])
    add("/sdapi/v1/png-info", png_info, methods=["POST"], response_model=PNGInfoResponse)
    add("/easel/v1/jobs/{job_id}", job, methods=["GET"], response_model=JobResponse)


async def generate(ctx: APIContext, body: Txt2ImgRequest, mode: Mode) -> GenerationResponse:
    try:
        translated = to_request(body, mode, ctx.plugins, ctx.request_defaults(body.override_settings))
        record = ctx.board.open(body.force_task_id)
    except CLIENT_ERRORS as e:
        raise APIError(422, str(e), type(e).__name__) from None
    except DuplicateJobId as e:
        raise APIError(409, str(e), "DuplicateJobId") from None
    try:
        result = await anyio.to_thread.run_sync(ctx.board.run, record, translated.request, limiter=ctx.workers)
    except anyio.get_cancelled_exc_class():
        ctx.board.abandon(record, "the client went away before the job ran")
        raise
    except CLIENT_ERRORS as e:
        raise APIError(422, str(e), type(e).__name__) from None
    except LookupError as e:  # an unknown checkpoint, VAE or refiner
        where = "override_settings.sd_model_checkpoint: " if "sd_model_checkpoint" in translated.request.override_settings else ""
        raise APIError(422, f"{where}{e}", "LookupError") from None
    except CheckpointError as e:
        raise APIError(500, str(e), "CheckpointError") from None
    except Exception as e:  # NaNs, an extension's failure: the job failed, the server goes on
        log.error("API job %s failed: %s", record.id, e, exc_info=True)
        raise APIError(500, f"{type(e).__name__}: {e}", type(e).__name__) from None
    images = [encode_png(g.image, g.infotext) for g in result.images] if body.send_images else []
    return GenerationResponse(images=images, parameters=parameters(body),
                              info=json.dumps(info(result, body, translated.ignored), ensure_ascii=False))


def progress_of(ctx: APIContext, skip_current_image: bool) -> ProgressResponse:
    control, event = ctx.engine.queue.current, ctx.engine.last_event
    if control is None:
        return ProgressResponse(progress=0.0, eta_relative=0.0, state=ProgressState())
    state = ProgressState(interrupted=control.interrupted, skipped=control.skipped, job="busy")
    if event is None or event.job_id != control.job_id:
        return ProgressResponse(progress=0.0, eta_relative=0.0, state=state, textinfo="Starting",
                                current_task=control.job_id)
    state.job = f"Batch {event.batch + 1} out of {event.batches}"
    state.job_count, state.job_no = event.batches, event.batch
    state.sampling_step, state.sampling_steps = event.step, event.steps
    preview = ctx.engine.last_preview
    image = None if skip_current_image or preview is None else encode_png(preview, None)
    return ProgressResponse(progress=event.fraction, eta_relative=event.eta or 0.0, state=state, current_image=image,
                            textinfo=f"Step {event.step}/{event.steps}", current_task=control.job_id)


def generation_parameters(text: str) -> dict:
    """A1111's `parse_generation_parameters` shape: Prompt, Negative prompt, each setting (sizes split into
    `Size-1`/`Size-2` by the parser); numbers as numbers."""
    prompt, negative, params = parse_infotext(text)
    out: dict = {"Prompt": prompt, "Negative prompt": negative}
    for key, value in params.items():
        out[key] = _number(value)
    return out


def _number(value: str):
    try:
        return json.loads(value) if value.strip().lstrip("-").replace(".", "", 1).isdigit() else value
    except ValueError:
        return value
