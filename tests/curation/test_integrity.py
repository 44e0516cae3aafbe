"""Robust inputs: truncated, zero-filled and corrupt files are decoded and dropped as incomplete, rotation-flagged and
portrait clips are judged on their displayed frame, duplicate rows collapse with a warning, URLs are refused
up front. All files are made here from the real Ophora clips."""

from __future__ import annotations

import subprocess

import imageio_ffmpeg
import pandas as pd
import pytest

from ophora.curation.config import load_config
from ophora.curation.inputs import DuplicateRowsWarning, InputError, read_tasks
from ophora.curation.pipeline import run_pipeline

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def damaged(tmp_path_factory, sample_clips):
    """A faststart copy (index at the front) of a real clip, that copy cut at 35 %, and one with its middle
    fifth zeroed; plus a rotation-flagged copy and a rotated low-resolution one."""
    folder = tmp_path_factory.mktemp("damaged")
    whole = folder / "faststart.mp4"
    ffmpeg("-i", str(sample_clips[1]), "-c", "copy", "-movflags", "+faststart", str(whole))
    data = whole.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) * 35 // 100])
    zeroed = bytearray(data)
    zeroed[len(data) * 4 // 10: len(data) * 6 // 10] = bytes(len(data) * 6 // 10 - len(data) * 4 // 10)
    (folder / "zeroed.mp4").write_bytes(bytes(zeroed))
    garbled = bytearray(data)  # 2 KB of noise mid-file: every frame still decodes, one of them broken
    garbled[len(data) // 2: len(data) // 2 + 2048] = __import__("random").Random(0).randbytes(2048)
    (folder / "garbled.mp4").write_bytes(bytes(garbled))
    ffmpeg("-display_rotation", "90", "-i", str(sample_clips[1]), "-c", "copy", str(folder / "rotated.mp4"))
    ffmpeg("-i", str(sample_clips[1]), "-vf", "scale=640:360", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           str(folder / "small.mp4"))
    ffmpeg("-display_rotation", "90", "-i", str(folder / "small.mp4"), "-c", "copy", str(folder / "small_rotated.mp4"))
    ffmpeg("-i", str(sample_clips[1]), "-vf", "transpose=1", "-c:v", "libx264", "-pix_fmt", "yuv420p",
           str(folder / "portrait.mp4"))
    return folder


@pytest.fixture(scope="module")
def curated(damaged, tmp_path_factory):
    names = ["faststart", "truncated", "zeroed", "garbled", "rotated", "small_rotated", "portrait"]
    rows = [{"clip_id": name, "video": str(damaged / f"{name}.mp4"),
             "caption": "Inject fluid under the capsule with a cannula to free the nucleus."} for name in names]
    manifest = damaged / "clips.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    config = load_config(overrides=["privacy.face_prescreen.enabled=false"])
    out = tmp_path_factory.mktemp("integrity") / "curated.parquet"
    return run_pipeline(read_tasks(manifest), config, out, workers=1).set_index("clip_id")


def test_whole_faststart_copy_is_kept(curated):
    row = curated.loc["faststart"]
    assert row["decision"] == "keep", row["reason"]
    assert row["decode_frames_decoded"] == row["decode_frames_expected"] == 49


@pytest.mark.parametrize("name", ["truncated", "zeroed"])
def test_damaged_files_are_dropped_as_incomplete(curated, name):
    row = curated.loc[name]
    assert row["probe_frames"] == 49  # the header still promises every frame
    assert row["decision"] == "drop" and row["drop_stage"] == "decode"
    decoded = int(row["decode_frames_decoded"])
    assert 0 < decoded < 49 and row["reason"] == f"incomplete: decoded {decoded} of 49 frames"


def test_a_corrupt_slice_mid_file_drops_the_clip(curated):
    """Concealed by the decoder, counted by no frame total: FFmpeg's error detection catches it."""
    row = curated.loc["garbled"]
    assert row["decode_frames_decoded"] == 49 and row["decode_errors"] > 0
    assert row["decision"] == "drop" and row["reason"].startswith("incomplete: damaged frames")
    assert curated.loc["faststart", "decode_errors"] == 0


@pytest.mark.slow
def test_the_curate_command_drops_a_corrupt_slice_with_two_workers(damaged, tmp_path):
    """The decoding pass reads FFmpeg's own error messages: checked through the real command, in worker
    processes, as a user runs it (the command once silenced FFmpeg's log, which would hide the errors)."""
    import os
    import sys

    rows = [{"clip_id": name, "video": str(damaged / f"{name}.mp4"),
             "caption": "Inject fluid under the capsule with a cannula to free the nucleus."}
            for name in ("garbled", "faststart")]
    pd.DataFrame(rows).to_csv(tmp_path / "clips.csv", index=False)
    out = tmp_path / "curated.parquet"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_FFMPEG_")}
    result = subprocess.run([sys.executable, "-m", "ophora", "curate", "--input", str(tmp_path / "clips.csv"),
                             "--out", str(out), "--workers", "2", "--quiet", "--set",
                             "privacy.face_prescreen.enabled=false"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "error while decoding" not in result.stderr  # captured by the pass, said in the row
    rows = pd.read_parquet(out).set_index("clip_id")
    assert rows.loc["garbled", "decode_errors"] > 0 and rows.loc["garbled", "decision"] == "drop"
    assert rows.loc["faststart", "decode_errors"] == 0 and rows.loc["faststart", "decision"] == "keep"


def test_error_detection_refuses_a_silenced_ffmpeg(damaged, tmp_path, monkeypatch, capsys):
    from ophora.curation.cli import main

    pd.DataFrame([{"video": str(damaged / "garbled.mp4"), "caption": "Inject fluid under the capsule."}]).to_csv(
        tmp_path / "clips.csv", index=False)
    monkeypatch.setenv("OPENCV_FFMPEG_LOGLEVEL", "-8")
    assert main(["--input", str(tmp_path / "clips.csv"), "--out", str(tmp_path / "c.parquet"), "--quiet"]) != 0
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "OPENCV_FFMPEG_LOGLEVEL" in said[0] and "unset it" in said[0]


def test_rotation_flagged_and_portrait_clips_are_judged_as_displayed(curated):
    rotated = curated.loc["rotated"]
    assert rotated["decision"] == "keep", rotated["reason"]
    assert (rotated["probe_width"], rotated["probe_height"]) == (480, 720)
    assert rotated["probe_rotation"] in (90, 270)
    portrait = curated.loc["portrait"]
    assert portrait["decision"] == "keep", portrait["reason"]
    small = curated.loc["small_rotated"]
    assert small["reason"] == "resolution: 360x640 below 720x480 (long x short side)"


def test_duplicate_rows_collapse_with_a_warning_naming_rows_and_path(tmp_path, sample_clips, capsys):
    rows = [{"video": str(sample_clips[0]), "caption": "Insert the lens."},
            {"video": str(sample_clips[1]), "caption": "Inject fluid."},
            {"video": str(sample_clips[0]), "caption": "Insert the lens."},
            {"clip_id": "x", "video": str(sample_clips[1]), "caption": "a"},
            {"clip_id": "x", "video": str(sample_clips[1]), "caption": "b"}]
    manifest = tmp_path / "dups.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    with pytest.warns(DuplicateRowsWarning) as caught:
        tasks = read_tasks(manifest)
    assert len(tasks) == 3 and tasks[2].caption == "a"  # the first of each kept
    message = str(caught[0].message)
    assert str(manifest) in message and "rows 1, 3" in message and "clip 'x': rows 4, 5" in message
    assert "2 duplicate row(s)" in message
    from ophora.curation.cli import main

    out = tmp_path / "cli" / "curated.parquet"
    assert main(["--input", str(manifest), "--out", str(out), "--workers", "1", "--quiet", "--limit", "1"]) == 0
    said = capsys.readouterr().err
    assert said.startswith(f"warning: {manifest}: 2 duplicate row(s) collapsed") and "Traceback" not in said


class RangeServer:
    """A real HTTP server on 127.0.0.1 serving files with Range support; it can cut a response short."""

    def __init__(self, files: dict[str, bytes]):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.files, self.requests, self.cut_after = files, [], None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                data = server.files.get(self.path)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
                body = data[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:  # a dropped connection mid-file
                    self.wfile.write(body[: server.cut_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_url_videos_are_downloaded_to_a_resumable_cache(tmp_path, sample_clips):
    data = sample_clips[1].read_bytes()
    with RangeServer({"/clips/hydro.mp4": data}) as server:
        rows = [{"clip_id": "remote", "video": server.url("/clips/hydro.mp4"),
                 "caption": "Inject fluid under the capsule with a cannula to free the nucleus."},
                {"clip_id": "gone", "video": server.url("/clips/missing.mp4"), "caption": "Insert the lens."}]
        manifest = tmp_path / "urls.csv"
        pd.DataFrame(rows).to_csv(manifest, index=False)
        tasks = read_tasks(manifest)
        assert tasks[0].video == rows[0]["video"]  # not mangled into a local path
        config = load_config(overrides=["privacy.face_prescreen.enabled=false"])
        out = tmp_path / "run" / "curated.parquet"
        server.cut_after = len(data) // 3  # the first run loses the connection a third of the way
        first = run_pipeline(tasks, config, out, workers=1).set_index("clip_id")
        assert first.loc["remote", "decision"] == "error" and "rerun to resume" in first.loc["remote", "reason"]
        assert first.loc["gone", "decision"] == "error" and "HTTP 404" in first.loc["gone", "reason"]
        server.cut_after = None
        second = run_pipeline(tasks, config, out, workers=1).set_index("clip_id")
    assert second.loc["remote", "decision"] == "keep", second.loc["remote", "reason"]
    assert ("/clips/hydro.mp4", f"bytes={len(data) // 3}-") in server.requests  # resumed, not restarted
    cached = list((tmp_path / "run" / "curated.downloads").glob("*.mp4"))
    assert len(cached) == 1 and cached[0].read_bytes() == data
    assert second.loc["remote", "video"] == str(cached[0])


def test_urls_that_cannot_be_fetched_are_refused_up_front(tmp_path):
    manifest = tmp_path / "urls.csv"
    pd.DataFrame([{"video": "s3://bucket/a.mp4", "caption": "Insert the lens."}]).to_csv(manifest, index=False)
    with pytest.raises(InputError, match=r"1 video URL\(s\) cannot be fetched here, e.g. s3://bucket/a.mp4: s3:// "
                                         r"needs a package that is not installed \(Install s3fs"):
        read_tasks(manifest)


def test_spreadsheet_csvs_are_read_or_refused_in_one_line(tmp_path, sample_clips, capsys):
    """A BOM and semicolons (Excel in many locales) are read; Latin-1, a stray separator and a missing column
    are one line naming the file and the row, never a traceback."""
    from ophora.curation.cli import main

    excel = tmp_path / "excel.csv"
    excel.write_bytes(("\ufeffvideo;caption;phase\n" f"{sample_clips[0]};Insert the lens; then rotate it;"
                       "lens implantation\n").replace("; then", ", then").encode("utf-8"))
    tasks = read_tasks(excel)
    assert len(tasks) == 1 and tasks[0].video == str(sample_clips[0]) and tasks[0].caption.startswith("Insert")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("video,caption\nclip.mp4,Insert the lens\nclip2.mp4,Se\u00f1ora N\u00fa\u00f1ez\n".encode("latin-1"))
    stray = tmp_path / "stray.csv"
    stray.write_text("video,caption\nclip.mp4,Insert the lens, then rotate it\n")
    missing = tmp_path / "missing.csv"
    missing.write_text("path,text\nclip.mp4,Insert the lens\n")
    expected = {latin: f"error: {latin}: row 2: byte 0xf1 is not UTF-8 text",
                stray: f"error: {stray}: row 1 has 3 fields, the header 2",
                missing: f"error: {missing}: the header needs a 'video' column"}
    for path, start in expected.items():
        assert main(["--input", str(path), "--out", str(tmp_path / "o.parquet")]) == 2
        said = capsys.readouterr().err
        assert said.startswith(start) and said.count("\n") == 1 and "Traceback" not in said, said
