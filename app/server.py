"""Build the Blocks for a mode and launch it: 127.0.0.1, no analytics, Gradio's cache in the data folder.

``build_app`` is what ``launch.py``, the notebook one-liner and the tests call. Which tabs exist is decided
here and only here (see ``AppConfig``): a rater station and a kiosk contain no history, provenance or admin
endpoints at all, which is stronger than hiding them.
"""

from __future__ import annotations

import functools
import logging
import socket
import ssl
from pathlib import Path

from app.config import AppConfig, configure_environment

logger = logging.getLogger(__name__)

CSS = """
footer {display: none !important}
#banner {border-left: 4px solid #2a6f97; padding-left: 8px}
"""


def theme():
    import gradio as gr

    # System fonts: the default theme would fetch Google Fonts, which fails offline and leaks the visit.
    return gr.themes.Soft(font=["system-ui", "Segoe UI", "Helvetica", "Arial", "sans-serif"],
                          font_mono=["ui-monospace", "Menlo", "Consolas", "monospace"])


def build_app(config: AppConfig, service=None, store=None):
    """The app for ``config.mode``. ``service``/``store`` may be passed in (tests, notebooks) to share them."""
    import gradio as gr

    from app.security import AdminSession

    configure_environment(config)
    if config.mode == "studio":
        config.ensure_admin_password()
    if config.mode in ("studio", "kiosk") and service is None:
        from app.service import GenerationService
        from ophora.generation.loading import LoadOptions

        service = GenerationService(config.load_options or LoadOptions(model=config.model))

    @functools.cache
    def store_getter():
        if store is not None:
            return store
        from ophora.study.store import StudyStore

        return StudyStore(config.database_url)

    titles = {"studio": config.title, "rater": f"{config.title}: rater station", "kiosk": f"{config.title}: demo"}
    with gr.Blocks(title=titles[config.mode], analytics_enabled=False, delete_cache=(3600, 24 * 3600)) as demo:
        gr.Markdown(f"# {titles[config.mode]}")
        if config.mode == "studio":
            from app.generate_tab import build_generate_tab
            from app.history import History
            from app.studies_tab import build_studies_tab

            banner = gr.Markdown(service.banner(), elem_id="banner")
            admin_state = gr.State(AdminSession())
            history = History(config.history_dir)
            with gr.Tabs() as tabs:
                study_pick = build_generate_tab(service, history, store_getter, config.gallery_dir, admin_state,
                                                banner, tabs, demo)
                build_studies_tab(store_getter, history, config, admin_state, study_pick)
        elif config.mode == "rater":
            from app.rate_tab import build_rate_tab

            # No tab strip and the intro inside the sign-in box (it collapses): the clip gets the screen.
            build_rate_tab(store_getter, intro="Sign in with your access code. You see only your own clips, "
                                               "in an order drawn for you.")
        else:
            from app.kiosk_tab import build_kiosk_tab

            gr.Markdown(service.banner() if service.loaded is None else "", elem_id="banner")
            with gr.Tabs():
                build_kiosk_tab(service, config.gallery_dir, config.kiosk_dir, config.kiosk_max_steps, demo,
                                speed=config.kiosk_speed)
    demo.queue(default_concurrency_limit=4)
    demo.ophora_service = service  # the notebook and tests reach the loaded pipeline through the app
    return demo


# A rater's request is a sign-in, an answer or a page turn: a few hundred bytes. Anything above this is refused
# with 413 from its Content-Length, before the body is read (Starlette's limit, through FastAPI's own option).
RATER_MAX_BODY_BYTES = 64 * 1024


def port_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on ``host:port`` (out of range, in use, unknown host), or ``None``.

    Tried with a real bind (as uvicorn will, SO_REUSEADDR included) so the answer comes before the model
    loads, not as Gradio's traceback after it."""
    if not 1 <= port <= 65535:
        return f"--port {port} is out of range: choose a port from 1 to 65535 (default 7860)."
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return f"--host {host} is not an address of this machine: use 127.0.0.1, or 0.0.0.0 for every network."
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except PermissionError:
            return f"--port {port} needs administrator rights on this machine: choose a port above 1023."
        except OSError as error:
            return f"--port {port} on {host} is in use by another program ({error.strerror}): stop it or choose " \
                   f"another --port."
    return None


def tls_problem(certfile: Path | None, keyfile: Path | None) -> str | None:
    """Why ``--ssl-certfile``/``--ssl-keyfile`` cannot serve HTTPS (one missing, unreadable, not a matching
    PEM pair), or ``None``. Loaded into an SSL context exactly as uvicorn will, before the model loads."""
    if certfile is None and keyfile is None:
        return None
    if certfile is None or keyfile is None:
        return "HTTPS needs both --ssl-certfile and --ssl-keyfile."
    for flag, path in (("--ssl-certfile", certfile), ("--ssl-keyfile", keyfile)):
        if not Path(path).is_file():
            return f"{flag} {path}: no such file."
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(certfile), str(keyfile))
    except (ssl.SSLError, OSError):
        return (f"--ssl-certfile {certfile} with --ssl-keyfile {keyfile} cannot serve HTTPS: give a PEM "
                f"certificate and its matching, unencrypted private key.")
    return None


def launch_kwargs(config: AppConfig) -> dict:
    from app.rate_tab import RATE_CSS, RATE_JS

    kwargs = dict(theme=theme(), css=CSS, head=None, footer_links=[], run_history=False, enable_monitoring=False,
                  mcp_server=False, pwa=False, ssr_mode=False)
    if config.mode == "rater":
        from starlette.middleware import Middleware

        from app.security import RaterStationRoutes

        # No uploads at all (413 even if a route were reachable), small bodies only, and only the rating
        # routes exist, each call checked before Gradio sees it.
        kwargs.update(head=RATE_JS, css=CSS + RATE_CSS, max_file_size=0,
                      app_kwargs={"middleware": [Middleware(RaterStationRoutes)],
                                  "max_body_size": RATER_MAX_BODY_BYTES})
    return kwargs


def blocked_paths(config: AppConfig) -> list[str]:
    """Folders Gradio must never serve by path, whatever else changes (belt and braces: files reach the
    browser only as staged copies, see ``app.security.stage_file``)."""
    paths = [config.history_dir, config.studies_dir, config.exports_dir, config.kiosk_dir]
    if "://" not in config.database_url:
        paths.append(Path(config.database_url))
    return [str(Path(p).resolve()) for p in paths]


def launch_app(config: AppConfig, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
               auth=None, inline: bool | None = None, open_browser: bool = False, block: bool = True, demo=None,
               ssl_certfile: str | Path | None = None, ssl_keyfile: str | Path | None = None):
    """Launch (building the app if needed); returns the Blocks once the server is up.

    With ``ssl_certfile``/``ssl_keyfile`` Gradio serves HTTPS itself. Its start-up self-check then skips
    certificate validation (``ssl_verify``): a self-signed certificate names the station's network name,
    not the 127.0.0.1 the check calls; raters' browsers still validate it."""
    demo = demo or build_app(config)
    tls = dict(ssl_certfile=str(ssl_certfile), ssl_keyfile=str(ssl_keyfile), ssl_verify=False) if ssl_certfile else {}
    demo.launch(server_name=host, server_port=port, share=share, auth=auth, inbrowser=open_browser,
                inline=inline, prevent_thread_lock=not block, quiet=False, show_error=True, **tls,
                allowed_paths=[], blocked_paths=blocked_paths(config), **launch_kwargs(config))
    return demo
