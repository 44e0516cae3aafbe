"""Reading the text files people hand us (CSV manifests, prompt lists) with errors that name file and line;
writing files only their owner may read."""

from __future__ import annotations

import os
from pathlib import Path


def owner_only(path: str | Path) -> Path:
    """Create ``path`` (or keep it) readable and writable by its owner only (mode 600) before anything is
    written: writers that open an existing file keep its mode, so an unblinding key or an access code is never
    readable by others, not even for a moment. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)
    return path


def read_text_file(path: str | Path, error_class: type[Exception] = ValueError) -> str:
    """A UTF-8 text file (a BOM is dropped). Why not ``open(encoding=...)``: its ``UnicodeDecodeError`` names
    neither the file nor the line, and spreadsheets often save CSVs as Windows-1252."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise error_class(f"{path}, line {line}: not UTF-8 text (byte 0x{data[error.start]:02x}). Save the file as "
                          f"UTF-8 (in Excel: Save As > CSV UTF-8) and try again.") from None
