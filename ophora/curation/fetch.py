"""Remote videos: http(s) and fsspec URLs are downloaded to a resumable cache before a clip is curated.

Why a cache: every stage reads the file (OpenCV, PySceneDetect, ffmpeg at release), so a URL is fetched once
into ``OUT.downloads/`` under a name derived from the URL, and the run uses the local copy. A download cut short
leaves ``NAME.part``; the next run asks the server for the rest (HTTP ``Range``) instead of starting over.
Schemes that cannot be read here (``s3://`` without s3fs installed, ...) are refused before anything runs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

import httpx

HTTP_SCHEMES = ("http", "https")


class DownloadError(RuntimeError):
    """The file could not be fetched; the message names the URL and what went wrong."""


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower()


def unsupported_reason(url: str) -> str | None:
    """Why ``url`` cannot be fetched here (None when it can): checked for every URL before a run starts."""
    scheme = scheme_of(url)
    if scheme in HTTP_SCHEMES:
        return None
    try:
        import fsspec

        fsspec.get_filesystem_class(scheme)
    except ImportError as error:  # fsspec knows the protocol but its package is not installed
        return f"{scheme}:// needs a package that is not installed ({error})"
    except ValueError:
        return f"{scheme}:// is not a protocol fsspec knows"
    return None


def cache_path(url: str, cache_dir: Path) -> Path:
    suffix = PurePosixPath(url.split("?", 1)[0]).suffix.lower() or ".mp4"
    return cache_dir / f"{hashlib.sha256(url.encode('utf-8')).hexdigest()[:24]}{suffix}"


def _fetch_http(url: str, part: Path, timeout_s: float) -> None:
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with httpx.stream("GET", url, headers=headers, timeout=timeout_s, follow_redirects=True) as response:
        if response.status_code == 416 and offset:  # the part file already holds everything
            return
        if response.status_code not in (200, 206):
            raise DownloadError(f"HTTP {response.status_code} for {url}")
        if offset and response.status_code == 200:  # the server ignored Range: start over
            offset = 0
        expected = response.headers.get("Content-Length")
        written = 0
        with part.open("ab" if offset else "wb") as handle:
            for chunk in response.iter_bytes():  # as received, so a cut connection keeps what arrived
                handle.write(chunk)
                written += len(chunk)
        if expected is not None and written != int(expected):
            raise DownloadError(f"{url}: connection closed after {offset + written} bytes; rerun to resume")


def _fetch_fsspec(url: str, part: Path) -> None:
    import fsspec

    offset = part.stat().st_size if part.exists() else 0
    with fsspec.open(url, "rb") as source, part.open("ab" if offset else "wb") as handle:
        source.seek(offset)
        while chunk := source.read(1 << 20):
            handle.write(chunk)


def fetch(url: str, cache_dir: str | Path, timeout_s: float = 60.0) -> Path:
    """Return the local copy of ``url`` in ``cache_dir``, downloading (or resuming) it when needed."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_path(url, cache_dir)
    if target.is_file():
        return target
    part = target.with_name(target.name + ".part")
    try:
        if scheme_of(url) in HTTP_SCHEMES:
            _fetch_http(url, part, timeout_s)
        else:
            _fetch_fsspec(url, part)
    except httpx.HTTPError as error:
        raise DownloadError(f"{url}: {type(error).__name__}: {error}; rerun to resume") from None
    except OSError as error:
        raise DownloadError(f"{url}: {error}") from None
    part.replace(target)
    return target


__all__ = ["DownloadError", "cache_path", "fetch", "unsupported_reason"]
