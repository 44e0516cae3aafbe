"""Ophora Studio's Gradio app: Generate, History, Rate, Studies and a conference kiosk, from one `launch.py`.

Privacy first: importing this package turns Gradio's analytics off before Gradio itself is imported, and
``configure_environment`` keeps Gradio's file cache inside the app's own data folder (never the shared system
temp folder). Notebook use::

    import app; app.notebook(model="tiny")
"""

from __future__ import annotations

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before any `import gradio`, here and in launch.py

from app.config import AppConfig, configure_environment  # noqa: E402

__all__ = ["AppConfig", "build_app", "configure_environment", "notebook"]


def build_app(config: AppConfig, **kwargs):
    """The ``gr.Blocks`` for ``config`` (see :func:`app.server.build_app`)."""
    from app.server import build_app as _build

    return _build(config, **kwargs)


def notebook(port: int | None = None, **options):
    """Render the app inline in a Jupyter notebook: ``import app; app.notebook(model="tiny")``.

    Keyword options are ``AppConfig`` fields (``model``, ``mode``, ``data_dir``, ``db_url`` ...); ``port``
    defaults to Gradio's first free one from 7860. The server binds to 127.0.0.1 like the desktop app. Returns
    the running ``gr.Blocks``; call ``.close()`` on it to stop the server."""
    from app.server import launch_app

    return launch_app(AppConfig(**options), port=port, inline=True, open_browser=False, block=False)
