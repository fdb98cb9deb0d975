"""`easel serve`: one server (uvicorn) with the API routes and the Gradio UI mounted at `/`.

Safe by default: it binds 127.0.0.1; with `--listen` or `--share` and no `--gradio-auth`, a password is
generated, printed once and required, both by the UI and by the API routes (HTTP Basic), unless the
user says `--insecure-no-auth`. A busy port moves to the next free one, with a message."""

from __future__ import annotations

import errno
import logging
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
PORT_TRIES = 100
GENERATED_USER = "easel"


class ServeError(RuntimeError):
    """A launch option that cannot work (unreadable auth file, no free port); the message says why."""


@dataclass(frozen=True)
class ServeOptions:
    listen: bool = False
    port: int = 7860
    share: bool = False
    gradio_auth: str | None = None  # "user:pass[,user2:pass2]"
    gradio_auth_path: Path | None = None  # the same, one or more per line
    api_auth: str | None = None  # credentials for the API routes; default: the UI's
    insecure_no_auth: bool = False
    api: bool = False
    nowebui: bool = False
    theme: str = ""  # "" follows the browser; "light" | "dark"
    cors_allow_origins: tuple[str, ...] = ()
    cmd_flags: tuple[tuple[str, object], ...] = ()  # the command line as parsed, for /sdapi/v1/cmd-flags

    @property
    def host(self) -> str:
        return "0.0.0.0" if self.listen else "127.0.0.1"

    @property
    def exposed(self) -> bool:
        return self.listen or self.share


@dataclass(frozen=True)
class Credentials:
    users: tuple[tuple[str, str], ...] = ()
    generated: bool = False

    def check(self, user: str, password: str) -> bool:
        return any(secrets.compare_digest(user, u) and secrets.compare_digest(password, p) for u, p in self.users)


def parse_credentials(text: str, where: str = "--gradio-auth") -> tuple[tuple[str, str], ...]:
    """A1111's format: `user:pass` pairs separated by commas or new lines."""
    users = []
    for item in text.replace("\n", ",").split(","):
        item = item.strip()
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise ServeError(f"{where}: {item.split(':')[0]!r} has no password; write user:password")
        users.append((user, password))
    return tuple(users)


def resolve_credentials(opts: ServeOptions) -> Credentials:
    users: tuple[tuple[str, str], ...] = ()
    if opts.gradio_auth:
        users += parse_credentials(opts.gradio_auth)
    if opts.gradio_auth_path:
        try:
            text = Path(opts.gradio_auth_path).read_text(encoding="utf-8")
        except OSError as e:
            raise ServeError(f"--gradio-auth-path: cannot read {opts.gradio_auth_path}: {e.strerror or e}") from e
        users += parse_credentials(text, f"--gradio-auth-path {opts.gradio_auth_path}")
    if users or not opts.exposed or opts.insecure_no_auth:
        return Credentials(users)
    return Credentials(((GENERATED_USER, secrets.token_urlsafe(12)),), generated=True)


def bind_socket(host: str, port: int, say: Callable[[str], None] = print) -> socket.socket:
    """A listening socket on `port`, or on the next free one (said aloud); ServeError if none."""
    for candidate in range(port, port + PORT_TRIES):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
        except OSError as e:
            sock.close()
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                continue
            raise ServeError(f"cannot listen on {host}:{candidate}: {e.strerror or e}") from e
        sock.listen(128)
        sock.set_inheritable(True)
        if candidate != port:
            say(f"Port {port} is busy; using {candidate} instead.")
        return sock
    raise ServeError(f"ports {port}-{port + PORT_TRIES - 1} are all busy; pass --port")


def announce_when_ready(server, local_url: str, share_port: int | None, say: Callable[[str], None]) -> None:
    """Print the local URL once uvicorn answers, then try the share link (never fatal)."""
    while not server.started and not server.should_exit:
        time.sleep(0.05)
    if server.should_exit:
        return
    say(f"Running on local URL:  {local_url}")
    if share_port is not None:
        share_url = open_share_link(share_port, say)
        if share_url:
            say(f"Running on public URL: {share_url}")


def open_share_link(port: int, say: Callable[[str], None]) -> str | None:
    """Gradio's share tunnel to 127.0.0.1:port, or None with the reason said (offline, blocked)."""
    from gradio.networking import setup_tunnel

    try:
        return setup_tunnel("127.0.0.1", port, secrets.token_urlsafe(32), None, None)
    except Exception as e:
        cause = e.__cause__ or e.__context__
        reason = f"{e}" + (f" ({type(cause).__name__}: {cause})" if cause else "")
        say(f"Could not create a share link: {reason}. Is this machine offline? Easel keeps serving locally.")
        return None


@dataclass(frozen=True)
class Listening:
    """Checked launch options: the credentials to require and the bound socket."""

    credentials: Credentials
    api_credentials: Credentials
    sock: socket.socket


def prepare(opts: ServeOptions, say: Callable[[str], None] = print) -> Listening:
    """Check the options and bind the port before anything slow starts; raises ServeError."""
    credentials = resolve_credentials(opts)
    api_credentials = Credentials(parse_credentials(opts.api_auth, "--api-auth")) if opts.api_auth else credentials
    return Listening(credentials, api_credentials, bind_socket(opts.host, opts.port, say))


def serve(opts: ServeOptions, listening: Listening, engine, plugins, config, say: Callable[[str], None] = print) -> int:
    """Serve until Ctrl+C (or SIGTERM); returns the exit status."""
    import uvicorn

    from webui.api.app import create_app
    from webui.api.auth import basic_auth_dependency

    credentials, api_credentials, sock = listening.credentials, listening.api_credentials, listening.sock
    if credentials.generated:
        user, password = credentials.users[0]
        say(f"The UI is reachable from other machines and no --gradio-auth was given, so it needs a login: "
            f"user {user!r}, password {password!r} (generated for this run; --gradio-auth user:pass picks your own).")
    elif opts.exposed and not credentials.users:
        say("WARNING: --insecure-no-auth: anyone who can reach this server can generate on it.")
    port = sock.getsockname()[1]
    deps = [basic_auth_dependency(api_credentials)] if api_credentials.users else []
    app = create_app(engine, plugins, dependencies=deps, config=config, sdapi=opts.api, cmd_flags=dict(opts.cmd_flags),
                     cors_origins=opts.cors_allow_origins)
    with tempfile.TemporaryDirectory(prefix="easel-ui-") as temp:
        if not opts.nowebui:
            mount_ui(app, engine, plugins, config, opts, credentials, Path(temp))
        host_shown = "127.0.0.1" if opts.host == "0.0.0.0" else opts.host
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3))
        threading.Thread(target=announce_when_ready, daemon=True,
                         args=(server, f"http://{host_shown}:{port}", port if opts.share else None, say)).start()
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn re-raises the Ctrl+C it handled, after a clean shutdown
            pass
    say("Easel stopped.")
    return 0


def mount_ui(app, engine, plugins, config, opts: ServeOptions, credentials: Credentials, temp: Path) -> None:
    import gradio as gr

    from webui.ui.blocks import build_blocks, page_css, page_head
    from webui.ui.context import UIContext
    from webui.ui.runner import GenerationRunner
    from webui.ui.theme import easel_theme

    ctx = UIContext(engine, plugins, config, GenerationRunner(engine, temp, config), local=not opts.exposed,
                    route_failures=tuple(app.state.route_failures))
    blocks = build_blocks(ctx)
    outputs = engine.options.outdir or engine.manager.paths.outputs_dir
    gr.mount_gradio_app(
        app, blocks, path="/", auth=list(credentials.users) or None, allowed_paths=[str(outputs), str(temp)],
        theme=easel_theme(), css=page_css(), head=page_head(opts.theme), footer_links=["api", "settings"],
        max_file_size="64mb", show_error=True, ssr_mode=False, enable_monitoring=False, mcp_server=False,
        auth_message="Easel: log in with the credentials printed when the server started.",
    )
    calm_queue(blocks)


QUEUE_POLL_SECONDS = 0.02


def calm_queue(blocks) -> None:
    """Gradio's queue polls for new events every 1 ms (every 10 ms for progress) even when idle: about 4%
    of a core on this 2-core machine, taken from the torch threads while a job runs. Every 20 ms / 100 ms
    is plenty for a generation queue (a job waits at most 20 ms more to start). Gradio has no option for
    it; the attributes are left alone if a Gradio version does not have them."""
    queue = getattr(blocks, "_queue", None)
    for name, seconds in (("sleep_when_free", QUEUE_POLL_SECONDS), ("progress_update_sleep_when_free", 0.1)):
        if isinstance(getattr(queue, name, None), float):
            setattr(queue, name, seconds)
