"""Reading the text files people hand us (CSV manifests, prompt lists) with errors that name file and line."""

from __future__ import annotations

from pathlib import Path


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
