"""What the app runs with: mode, model options, folders, the study database and the study lead's password.

Why one dataclass: ``launch.py``, the notebook one-liner and the tests build the same app from it, so
there is exactly one place that decides where files go and which tabs (and therefore which HTTP endpoints)
exist.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from ophora.generation.request import MAX_STEPS

MODES = ("studio", "rater", "kiosk")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def default_data_dir() -> Path:
    """``$OPHORA_STUDIO_HOME``, else the user's data folder: generated clips and study data stay private."""
    env = os.environ.get("OPHORA_STUDIO_HOME")
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "ophora-studio"


@dataclass
class AppConfig:
    """Everything ``build_app`` needs. ``mode`` decides which tabs are built:

    - ``studio`` (default): Generate, History and Studies (the study lead's tab, behind the admin password);
      for the operator at their own workstation, bound to 127.0.0.1.
    - ``rater``: only the Rate tab. Raters sit at a rater station; the generation history, provenance and
      admin endpoints do not exist in this process at all.
    - ``kiosk``: the conference demo: a looping gallery and a generation queue; no history, studies or admin.
    """

    mode: str = "studio"
    model: str = "tiny"
    load_options: object | None = None  # ophora.generation.loading.LoadOptions; built from `model` if None
    data_dir: Path = field(default_factory=default_data_dir)
    db_url: str | None = None  # default: SQLite file <data_dir>/studies.db
    admin_password: str | None = None  # None: a random one is generated and printed at start
    demo_dir: Path | None = None  # kiosk gallery clips; default <data_dir>/demo
    kiosk_max_steps: int = 50
    kiosk_speed: str = "exact"  # a preset of ophora.generation.speed for kiosk visitors' clips
    title: str = "Ophora Studio"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"Unknown mode {self.mode!r}; choose one of: {', '.join(MODES)}.")
        from ophora.generation.options import SPEEDS

        if self.kiosk_speed not in SPEEDS:
            raise ValueError(f"Unknown kiosk speed {self.kiosk_speed!r}; choose one of: {', '.join(SPEEDS)}.")
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        if self.demo_dir is not None:
            self.demo_dir = Path(self.demo_dir).expanduser().resolve()
        if (not isinstance(self.kiosk_max_steps, int) or isinstance(self.kiosk_max_steps, bool)
                or not 1 <= self.kiosk_max_steps <= MAX_STEPS):
            # The Generate form's own bounds: checked at start, not when the first visitor is refused.
            raise ValueError(f"--kiosk-steps must be a whole number from 1 to {MAX_STEPS} (50 is the published "
                             f"setting); got {self.kiosk_max_steps!r}.")
        if self.admin_password is not None and len(self.admin_password) < 8:
            raise ValueError("The study lead's admin password must be at least 8 characters.")

    @property
    def history_dir(self) -> Path:
        return self.data_dir / "history"

    @property
    def kiosk_dir(self) -> Path:
        return self.data_dir / "kiosk"

    @property
    def gallery_dir(self) -> Path:
        return self.demo_dir or self.data_dir / "demo"

    @property
    def studies_dir(self) -> Path:
        return self.data_dir / "studies"

    @property
    def exports_dir(self) -> Path:
        return self.data_dir / "exports"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "gradio-cache"

    @property
    def database_url(self) -> str:
        return self.db_url or str(self.data_dir / "studies.db")

    def ensure_admin_password(self) -> tuple[str, bool]:
        """The admin password, and whether it was generated now (then launch.py prints it once)."""
        if self.admin_password:
            return self.admin_password, False
        self.admin_password = secrets.token_urlsafe(12)
        return self.admin_password, True


def configure_environment(config: AppConfig) -> None:
    """Private folders (0700) and Gradio's cache inside them. Call before the app is launched."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    for folder in (config.data_dir, config.cache_dir):
        folder.mkdir(parents=True, exist_ok=True)
        try:
            folder.chmod(0o700)
        except OSError:  # e.g. a folder owned by someone else: leave as is
            pass
    os.environ["GRADIO_TEMP_DIR"] = str(config.cache_dir)
