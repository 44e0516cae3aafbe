#!/usr/bin/env python
"""Start Ophora Studio: `python launch.py` (studio), `--mode rater` (rater station), `--mode kiosk` (demo).

Examples:
  python launch.py --model tiny --port 7861 --no-browser      # try it without a GPU or weights
  python launch.py --model models/Ophora --quantization int8  # a 16 GB GPU
  python launch.py --mode rater --db postgresql+psycopg://study@host/studies --host 0.0.0.0 --port 8443
      --ssl-certfile station.crt --ssl-keyfile station.key       # raters at other sites, over HTTPS
  python launch.py --mode kiosk --model models/Ophora --demo-dir conference_clips/

Private by default: bound to 127.0.0.1, Gradio analytics off, files under --data-dir. `--share` (a public
gradio.live link) and binding the studio to a network address need --auth; any network address needs HTTPS
(--ssl-certfile/--ssl-keyfile) unless --allow-plain-http says the network is trusted. The study lead's admin
password comes from $OPHORA_ADMIN_PASSWORD or --admin-password-file, else a random one is printed at start.
Every flag is checked (port free, certificate readable, kiosk settings in range) before any model loads.
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before anything imports gradio

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from ophora.generation.cli import add_model_arguments, load_options_from_args  # noqa: E402
from ophora.generation.options import SPEEDS  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    from app.config import MODES, default_data_dir

    parser = argparse.ArgumentParser(prog="python launch.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=MODES, default="studio",
                        help="studio: Generate, History, Studies (default); rater: only the Rate tab, for rater "
                             "stations; kiosk: conference demo gallery and generation queue")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on (default 7860)")
    parser.add_argument("--ssl-certfile", type=Path, help="HTTPS certificate (PEM) for raters reaching this machine "
                                                          "over the network; needs --ssl-keyfile")
    parser.add_argument("--ssl-keyfile", type=Path, help="private key (PEM) of --ssl-certfile")
    parser.add_argument("--allow-plain-http", action="store_true",
                        help="serve a network address without HTTPS (only on a network you trust, e.g. one "
                             "hospital's LAN): answers and access codes then travel unencrypted")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    parser.add_argument("--share", action="store_true", help="public gradio.live link (needs --auth)")
    parser.add_argument("--auth", help="USER:PASSWORD required to open the app at all (or $OPHORA_APP_AUTH)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help=f"history, blinded clips, exports and Gradio's cache (default {default_data_dir()})")
    parser.add_argument("--db", help="study database: SQLite file or SQLAlchemy URL (default <data-dir>/studies.db)")
    parser.add_argument("--admin-password-file", type=Path,
                        help="file holding the study lead's password (or set $OPHORA_ADMIN_PASSWORD)")
    parser.add_argument("--demo-dir", type=Path, help="kiosk gallery clips (default <data-dir>/demo)")
    parser.add_argument("--kiosk-steps", type=int, default=50,
                        help="denoising steps for kiosk visitors (1 to 500, the Steps limit of the Generate form)")
    parser.add_argument("--kiosk-speed", choices=SPEEDS, default="exact",
                        help="sampling speed preset for kiosk visitors' clips (exact: the published sampler; see "
                             "docs/gpu.md for each preset's measured speed and deviation)")
    add_model_arguments(parser)
    parser.set_defaults(model=os.environ.get("OPHORA_MODEL") or parser.get_default("model"))
    return parser


def main(argv: list[str] | None = None) -> int:
    from app.config import LOOPBACK_HOSTS, AppConfig
    from app.server import launch_app, port_problem, tls_problem

    parser = build_parser()
    args = parser.parse_args(argv)

    def refuse(message: str):
        """One line, exit code 2, before anything loads (argparse's usage block would bury the reason)."""
        parser.exit(2, f"{parser.prog}: error: {message}\n")

    auth_text = args.auth or os.environ.get("OPHORA_APP_AUTH")
    auth = None
    if auth_text:
        user, sep, password = auth_text.partition(":")
        if not sep or not user or len(password) < 8:
            refuse("--auth must be USER:PASSWORD with a password of at least 8 characters")
        auth = (user, password)
    if args.share and auth is None:
        refuse("--share publishes the app on the internet: it needs --auth USER:PASSWORD")
    if args.mode == "studio" and args.host not in LOOPBACK_HOSTS and auth is None:
        refuse("the studio shows the generation history and provenance: binding it to a network address "
               "needs --auth USER:PASSWORD (or run raters on a `--mode rater` station)")
    tls = tls_problem(args.ssl_certfile, args.ssl_keyfile)
    if tls:
        refuse(tls)
    if args.host not in LOOPBACK_HOSTS and args.ssl_certfile is None and not args.allow_plain_http:
        refuse(f"--host {args.host} lets other machines connect, and without HTTPS their access codes and answers "
               f"travel unencrypted: give --ssl-certfile and --ssl-keyfile, or --allow-plain-http on a network "
               f"you trust")
    # Only the studio has a study lead: a rater station or kiosk ignores the variable, even set empty.
    admin_password = (os.environ.get("OPHORA_ADMIN_PASSWORD") or None) if args.mode == "studio" else None
    if args.admin_password_file and args.mode == "studio":
        try:
            admin_password = args.admin_password_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            refuse(f"--admin-password-file {args.admin_password_file}: cannot read it ({error})")
    data_dir = {"data_dir": args.data_dir} if args.data_dir else {}
    try:
        config = AppConfig(mode=args.mode, model=args.model, load_options=load_options_from_args(args),
                           db_url=args.db, admin_password=admin_password, demo_dir=args.demo_dir,
                           kiosk_max_steps=args.kiosk_steps, kiosk_speed=args.kiosk_speed,
                           **data_dir)
    except ValueError as error:
        refuse(str(error))
    if config.mode == "kiosk" and args.kiosk_speed != "exact":  # e.g. magcache not calibrated: say so now,
        from ophora.generation.request import GenerationRequest  # not to every visitor in turn
        from ophora.generation.speed import SpeedPresetError, check_speed_before_load

        try:
            check_speed_before_load(load_options_from_args(args), GenerationRequest(prompt="kiosk", speed=args.kiosk_speed))
        except SpeedPresetError as error:
            refuse(f"--kiosk-speed {args.kiosk_speed}: {error}")
    busy = port_problem(args.host, args.port)  # the last check: a port is best tried just before it is taken
    if busy:
        refuse(busy)
    if config.mode == "studio":
        password, generated = config.ensure_admin_password()
        if generated:
            print(f"Study lead (Studies tab) admin password for this run: {password}\n"
                  f"(set OPHORA_ADMIN_PASSWORD or --admin-password-file to choose your own)", flush=True)
    print(f"Data folder: {config.data_dir}", flush=True)
    launch_app(config, host=args.host, port=args.port, share=args.share, auth=auth,
               open_browser=not args.no_browser and _has_display(), block=True,
               ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile)
    return 0


def _has_display() -> bool:
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


if __name__ == "__main__":
    sys.exit(main())
