"""Database engines and migrations for study databases.

SQLite (a file, the default) is set up for many raters at once and for crashes: WAL journal, foreign keys,
a busy timeout, ``synchronous=FULL`` so a committed rating survives power loss, and ``BEGIN IMMEDIATE`` for
write transactions so two writers queue on the busy timeout instead of failing with "database is locked"
when a read transaction tries to upgrade. PostgreSQL URLs are used as given (multi-site studies).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT_MS = 60_000
READ_ONLY = "ophora_read_only"  # execution option: a plain deferred BEGIN for read-only work


def normalize_url(url_or_path: str | Path) -> str:
    """Accept a SQLAlchemy URL or a plain file path (``studies/x.db`` -> ``sqlite:///studies/x.db``)."""
    text_ = str(url_or_path)
    if "://" in text_:
        if text_.startswith("postgresql://") or text_.startswith("postgres://"):
            # psycopg 3 is the driver we ship; plain postgresql:// would ask for psycopg2.
            text_ = "postgresql+psycopg://" + text_.split("://", 1)[1]
        return text_
    return f"sqlite:///{Path(text_).expanduser().resolve()}"


SYNCHRONOUS = ("FULL", "NORMAL")


def make_engine(url_or_path: str | Path, *, sqlite_synchronous: str = "FULL", **engine_kwargs) -> Engine:
    """An engine for a study database, with the SQLite safety settings described above.

    ``sqlite_synchronous="NORMAL"`` skips the fsync per commit (about 5 ms on our disks): committed ratings
    still survive a killed process, but not a power cut or OS crash. FULL is the default for that reason."""
    url = normalize_url(url_or_path)
    if url.startswith("sqlite"):
        if url in ("sqlite://", "sqlite:///:memory:"):
            raise ValueError("study databases must be files (or PostgreSQL): an in-memory SQLite database "
                             "would lose every rating when the process ends")
        Path(url.split("sqlite:///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
        connect_args.update(engine_kwargs.pop("connect_args", {}))
        engine = create_engine(url, connect_args=connect_args, **engine_kwargs)
        if sqlite_synchronous not in SYNCHRONOUS:
            raise ValueError(f"sqlite_synchronous must be one of {SYNCHRONOUS}, got {sqlite_synchronous!r}")
        _configure_sqlite(engine, sqlite_synchronous)
        return engine
    engine_kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **engine_kwargs)


def database_exists(url_or_path: str | Path) -> bool:
    """Whether a study database is already there: the SQLite file, or a PostgreSQL database with our schema
    (checked without creating anything)."""
    url = normalize_url(url_or_path)
    if url.startswith("sqlite"):
        path = url.split("sqlite:///", 1)[-1]
        return Path(path).is_file() and Path(path).stat().st_size > 0
    from sqlalchemy import inspect

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return inspect(conn).has_table("studies")
    except Exception:
        return False
    finally:
        engine.dispose()


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Let SQLAlchemy, not pysqlite, decide where transactions begin (see the "begin" hook below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def alembic_config(engine: Engine | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent): a study made by an older version opens in this one."""
    from alembic import command

    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def integrity_check(engine: Engine) -> str:
    """SQLite's own consistency check ("ok" when the file is sound)."""
    with engine.connect() as conn:
        return "\n".join(row[0] for row in conn.execute(text("PRAGMA integrity_check")))
