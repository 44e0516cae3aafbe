"""Run the stages over every clip: one row per clip, resumable, in parallel processes or on Ray.

Why rows are written as they finish: a 160K-clip run takes days; each finished clip is appended to a JSON
Lines journal beside the output, so a crash or Ctrl-C loses at most the clips in flight, and a rerun skips
clips already decided (kept or dropped) under the same config. Clips that failed for reasons outside the
clip (endpoint down, malformed model answer, an unexpected exception) are recorded as ``decision="error"``
and retried by the next run. One bad clip never stops the run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from .chat_client import ChatEndpoint, EndpointDown, MalformedAnswer
from .decode import (DecodedClip, check_error_logging, decode_clip, ffmpeg_errors, open_stream,
                     scene_window, window_seconds)
from .dynamics import dynamics_stage
from .inputs import ClipTask
from .probe import probe_clip
from .processes import die_with_parent, start_reaper, stop_workers
from .refine import InvalidInstruction, RefineCache, Refiner, validate_instruction
from .stages import RetryableError, StageResult

STAGES = ("download", "probe", "caption", "narration", "decode", "dynamics", "window", "face", "text", "vlm", "refine", "deid")
# Columns that legitimately differ between two runs of the same clips (timings, cache hits).
VOLATILE_COLUMNS = ("dynamics_seconds", "decode_seconds", "refine_cached", "seconds", "worker")


# Settings that change how a result is fetched, not what it is: changing them keeps earlier decisions valid.
TRANSPORT_KEYS = ("base_url", "api_key_env", "timeout_s", "retries", "backoff_s", "cache", "max_backoff_s",
                  "clip_timeout_s", "breaker_failures", "breaker_pause_s", "breaker_stop_after")


def config_hash(config: dict) -> str:
    """Identity of the settings that decide a clip's row; a rerun re-decides clips decided under another."""
    relevant = json.loads(json.dumps({key: value for key, value in config.items() if key != "run"}))
    for section in (relevant["refine"], relevant["privacy"]["vlm"]):
        for key in TRANSPORT_KEYS:
            section.pop(key, None)
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode("utf-8")).hexdigest()[:12]


def output_paths(out: str | Path) -> dict[str, Path]:
    out = Path(out)
    stem = out.with_suffix("")
    return {"parquet": out, "journal": Path(f"{stem}.journal.jsonl"), "cache": Path(f"{stem}.refine-cache.sqlite"),
            "report": Path(f"{stem}.report.html"), "summary": Path(f"{stem}.summary.json"),
            "config": Path(f"{stem}.config.json"), "downloads": Path(f"{stem}.downloads"),
            "breaker": Path(f"{stem}.breaker"), "narration": Path(f"{stem}.narration.private.parquet")}


def _owner_only(path: str, flags: int) -> int:
    """``open`` opener: a new file readable by its owner only (an existing one is made so too)."""
    descriptor = os.open(path, flags, 0o600)
    os.fchmod(descriptor, 0o600)
    return descriptor


def write_private(frame: pd.DataFrame, path: Path) -> None:
    """Write a private working file readable by its owner only (the raw narration, the curated manifest)."""
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(descriptor)
    frame.to_parquet(partial, index=False)
    os.chmod(partial, 0o600)
    partial.replace(path)


class Curator:
    """Holds one config and the stage objects built from it (the face cascade, the backends)."""

    def __init__(self, config: dict, cache_path: str | Path | None = None, breaker_path: str | Path | None = None):
        self.config = config
        self.hash = config_hash(config)
        if config["probe"]["error_detection"]:
            check_error_logging()
        privacy = config["privacy"]
        self.face = None
        if privacy["face_prescreen"]["enabled"]:
            from .privacy import FaceScreen

            self.face = FaceScreen(privacy["face_prescreen"])
        self.text = None
        if privacy["text_prescreen"]["enabled"]:
            from .privacy import TextScreen

            self.text = TextScreen(privacy["text_prescreen"])
        self.vlm = None
        if privacy["vlm"]["enabled"]:
            from .privacy import VlmScreen

            self.vlm = VlmScreen(privacy["vlm"], _own_breaker(breaker_path, "vlm"))
        self.refiner = Refiner(config["refine"], cache_path, _own_breaker(breaker_path, "refine"))
        from .deid import shared_deidentifier

        self.deid = shared_deidentifier(privacy["deid"])
        from .privacy import frame_hits

        self.blur = frame_hits(config) == "blur"  # hits are recorded for the release to cover, not dropped
        self._side_thread: ThreadPoolExecutor | None = None  # the frame screens' thread, started on first use

    def close(self) -> None:
        """Stop the frame screens' side thread (a long-lived Ray worker builds a Curator per batch)."""
        if self._side_thread is not None:
            self._side_thread.shutdown(wait=True, cancel_futures=True)
            self._side_thread = None

    def __enter__(self) -> "Curator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _probe_stage(self, state: ClipState) -> StageResult:
        """Open the clip once: the probe reads the header of the stream the decoding pass then reads."""
        try:
            with ffmpeg_errors():  # a damaged file's messages: the probe and the decoding pass say it in words
                state.stream = open_stream(state.task.video)
        except Exception:  # missing, empty or unreadable: the probe says which, in its own words
            state.stream = None
        return probe_clip(state.task, self.config, state.stream.capture if state.stream is not None else None)

    def _caption_stage(self, state: ClipState) -> StageResult:
        caption = state.task.caption
        words = len((caption or "").split())
        measured = {"words": words}
        if not caption:
            return StageResult(measured, "caption: missing caption")
        if words < int(self.config["caption"]["min_words"]):
            return StageResult(measured, f"caption: too short ({words} words)")
        return StageResult(measured)

    def _narration_stage(self, state: ClipState) -> StageResult:
        """PHI screen of the narration before any refiner (or remote LLM) sees it: sentences with PHI go."""
        screened = self.deid.screen(state.task.caption or "")
        measured = {"sentences": screened.sentences, "removed_sentences": screened.removed_sentences,
                    "redactions": json.dumps(screened.kinds, sort_keys=True)}
        if not screened.text:  # caption "": with every stage measured, the refiner still sees nothing of it
            return StageResult(measured, f"privacy: PHI in every narration sentence ({_kinds_text(screened.kinds)})",
                               caption="")
        return StageResult(measured, caption=screened.text)

    def _sample_indices(self, state: ClipState) -> list[int]:
        """Frame numbers the VLM looks at (kept by the decoding pass, decoded nowhere else)."""
        from .privacy import sample_indices

        if self.vlm is None:
            return []
        facts, task = state.facts, state.task
        return sample_indices(facts["fps"], facts["frames"], int(self.config["privacy"]["vlm"]["frames"]),
                              task.start_s, task.end_s)

    def _decode_stage(self, state: ClipState) -> StageResult:
        """Decode every frame of the clip window once (cuts, screens and VLM samples on the way); see decode.py."""
        state.samples = self._sample_indices(state)
        dynamics = self.config["dynamics"] if self.config["dynamics"]["enabled"] else None
        try:
            state.decoded = decode_clip(state.task, state.facts, set(state.samples), dynamics, stream=state.stream,
                                        on_frame=self._start_screens(state),
                                        error_detection=bool(self.config["probe"]["error_detection"]))
        except Exception as error:  # the decoder gave up on this file: a fact about the clip
            return StageResult({}, f"incomplete: the video could not be decoded ({type(error).__name__}: {error})")
        finally:
            state.stream = None  # read to the end of the window; the capture is released with its last reference
        decoded = state.decoded
        measured = {"frames_expected": decoded.frames_expected, "frames_decoded": decoded.frames_decoded,
                    "failures": decoded.decode_failures,
                    "errors": len(decoded.errors) if decoded.errors is not None else None,
                    "seconds": decoded.seconds}
        missing = decoded.frames_expected - decoded.frames_decoded
        if missing > int(self.config["probe"]["max_missing_frames"]):
            return StageResult(measured, f"incomplete: decoded {decoded.frames_decoded} of "
                                         f"{decoded.frames_expected} frames")
        if measured["errors"]:
            return StageResult(measured, f"incomplete: damaged frames (the decoder reported {measured['errors']} "
                                         f"errors in the clip)")
        return StageResult(measured)

    def _start_screens(self, state: ClipState) -> Callable[[int, np.ndarray], None] | None:
        """Screen every decoded frame on a side thread as the decoding pass reads it: the cheap face and
        text-region passes (OpenCV releases the GIL) run while the rest of the clip decodes."""
        if self.face is None and self.text is None:
            return None
        if self._side_thread is None:
            self._side_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ophora-screen")
        pool = self._side_thread

        def on_frame(index: int, frame_bgr: np.ndarray) -> None:
            state.looks[index] = pool.submit(self._look, frame_bgr)
        return on_frame

    def _look(self, frame_bgr: np.ndarray) -> Look:
        """One frame through the cheap passes: confirmed face boxes, full-resolution crops of text-like regions
        (and, with ``frame_hits: blur``, their boxes). The frame is turned grey once; each screen shrinks that
        grey frame to its own size."""
        import cv2

        from .privacy import fit_frame

        gray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
        faces = self.face.face_boxes(gray) if self.face is not None else []
        crops, boxes = [], []
        if self.text is not None:
            small = fit_frame(gray, int(self.config["privacy"]["text_prescreen"]["max_side"]))
            crops = self.text.crops(gray, small)
            if crops and self.blur:  # only where the cheap pass fired: the boxes the release would cover
                boxes = self.text.boxes(gray.shape, small, pad=0.6)
        return Look(faces, crops, boxes)

    def _screened(self, state: ClipState) -> tuple[dict[int, Look], int, int]:
        """Every frame's look, and the range [first, end) of consecutive frames that were looked at."""
        looks = {index: future.result() for index, future in sorted(state.looks.items())}
        first = min(looks) if looks else state.decoded.first_frame
        end = first
        while end in looks:
            end += 1
        return looks, first, end

    def _face_stage(self, state: ClipState) -> StageResult:
        looks, first, end = self._screened(state)
        hits = [i for i, look in looks.items() if look.faces]
        result = self.face.judge(hits, end - first, first, end)
        return self._blur_instead(state, result, "face", {i: looks[i].faces for i in hits})

    def _text_stage(self, state: ClipState) -> StageResult:
        looks, first, end = self._screened(state)
        enough = None if self.blur or not self.config["run"]["stop_at_first_drop"] else \
            int(self.config["privacy"]["text_prescreen"]["max_text_frames"]) + 1  # dropped then: read no further
        words = self.text.read({i: look.crops for i, look in looks.items() if look.crops}, enough)
        result = self.text.judge(words, end - first, first, end)
        hits = [i for i, count in words.items() if count >= int(self.config["privacy"]["text_prescreen"]["min_words"])]
        # every text-like region of a frame where OCR read a word, not only the regions it read: a second line
        # the OCR could not read with confidence may still be legible to a person
        return self._blur_instead(state, result, "text", {i: looks[i].boxes for i in hits})

    def _blur_instead(self, state: ClipState, result: StageResult, kind: str,
                      boxes: dict[int, list[tuple[int, int, int, int]]]) -> StageResult:
        """With ``frame_hits: blur``, a clip dropped only for its hit frames is kept and the hits' boxes are
        recorded for the release to cover (frame number, kind, box); otherwise ``result`` unchanged."""
        if not self.blur or not boxes or not result.measurements.get("frames_checked"):
            return result  # drop mode, no hit, or nothing decoded (that reason stands)
        state.regions += [{"frame": int(i), "kind": kind, "box": [int(v) for v in box]}
                          for i, found in sorted(boxes.items()) for box in found]
        return StageResult(result.measurements)

    def _dynamics_stage(self, state: ClipState) -> StageResult:
        return dynamics_stage(state.task, self.config, measured=state.decoded.cuts)

    def _window_stage(self, state: ClipState) -> StageResult:
        """The training window: the longest scene of the clip (all of it when there is no cut)."""
        decoded, facts, task = state.decoded, state.facts, state.task
        fps = facts["fps"]
        last = decoded.first_frame + min(decoded.frames_expected, decoded.frames_decoded)
        cut_frames = list((decoded.cuts or {}).get("cut_frames") or [])
        first_frame, end_frame = scene_window(cut_frames, decoded.first_frame, last, fps)
        measured = {"frames": end_frame - first_frame, "scenes": len(cut_frames) + 1,
                    "start_s": task.start_s, "end_s": task.end_s, "first_frame": first_frame, "end_frame": end_frame}
        if cut_frames:
            measured["start_s"], measured["end_s"] = window_seconds(first_frame, end_frame, fps)
        wanted = self.config["probe"].get("window_frames")
        if wanted and measured["frames"] < int(wanted):
            where = "longest scene" if cut_frames else "clip"
            return StageResult(measured, f"window: {where} has {measured['frames']} frames, fewer than the "
                                         f"{int(wanted)}-frame training window")
        return StageResult(measured)

    def _vlm_stage(self, state: ClipState) -> StageResult:
        return self.vlm(state.task, frames=state.decoded.pick(state.samples))

    def _refine_stage(self, state: ClipState) -> StageResult:
        if not (state.task.caption or "").strip():  # nothing passed the narration's PHI screen: ask no refiner
            return StageResult({"refine_backend": self.refiner.label}, "refine: no narration left to refine")
        try:
            return StageResult(self.refiner.refine(state.task.caption or ""))
        except InvalidInstruction as error:
            return StageResult({"refine_backend": self.refiner.label}, f"refine: {error}")

    def _deid_stage(self, state: ClipState) -> StageResult:
        return self.screen_instruction(state.instruction or "")

    def screen_instruction(self, instruction: str) -> StageResult:
        """PHI screen of the refined instruction (an LLM may add what the narration screen removed)."""
        screened = self.deid.screen(instruction or "")
        measured = {"removed_sentences": screened.removed_sentences,
                    "redactions": json.dumps(screened.kinds, sort_keys=True)}
        if not screened.findings:
            return StageResult(measured)
        measured["instruction"] = None  # never keep an instruction with PHI, not even in a dropped row
        if not screened.text:
            return StageResult(measured, f"privacy: PHI in the instruction ({_kinds_text(screened.kinds)})")
        try:
            measured["instruction"] = validate_instruction(screened.text, self.config["refine"])
        except InvalidInstruction as error:
            return StageResult(measured, f"privacy: PHI in the instruction ({_kinds_text(screened.kinds)}); "
                                         f"what is left is no instruction ({error})")
        return StageResult(measured)

    def stage_functions(self) -> list[tuple[str, Callable[[ClipState], StageResult]]]:
        stages: list[tuple[str, Callable[[ClipState], StageResult]]] = [
            ("probe", self._probe_stage), ("caption", self._caption_stage),
            ("narration", self._narration_stage), ("decode", self._decode_stage)]
        if self.config["dynamics"]["enabled"]:
            stages.append(("dynamics", self._dynamics_stage))
        stages.append(("window", self._window_stage))
        for name, screen, stage in (("face", self.face, self._face_stage), ("text", self.text, self._text_stage),
                                    ("vlm", self.vlm, self._vlm_stage)):
            if screen is not None:
                stages.append((name, stage))
        stages.append(("refine", self._refine_stage))
        stages.append(("deid", self._deid_stage))
        return stages

    def process(self, task: ClipTask) -> dict:
        """Run every stage on one clip and return its row. Never raises for a bad clip."""
        began = time.perf_counter()
        row: dict = {"clip_id": task.clip_id, "video": task.video, "phase": task.phase,
                     "start_s": task.start_s, "end_s": task.end_s}
        if self.config["run"].get("keep_narration"):
            row["narration"] = task.caption  # asked for explicitly; `curate release` never copies it
        state = ClipState(task)
        reasons, stages_run, decision, drop_stage = [], [], "keep", None
        stop_early = bool(self.config["run"]["stop_at_first_drop"])
        for name, stage in self.stage_functions():
            if decision != "keep" and (stop_early or not row.get("probe_clip_frames")):
                break  # a clip with no decodable frame has nothing left to measure
            if name in NEEDS_DECODED and state.decoded is None:
                continue  # measure-everything mode after a failed decode: nothing to look at
            try:
                result = stage(state)
            except EndpointDown:
                raise  # the run stops (see run_pipeline); this clip stays undecided
            except (RetryableError, MalformedAnswer) as error:
                reasons.append(f"{name}: {error}")
                if decision == "keep":  # an already dropped clip stays decided
                    decision, drop_stage = "error", name
                break
            except Exception as error:  # never let one clip stop the run; keep the evidence
                reasons.append(f"{name}: unexpected {type(error).__name__}: {error}")
                if decision == "keep":
                    decision, drop_stage = "error", name
                break
            stages_run.append(name)
            for key, value in result.measurements.items():
                row[key if name in ("refine", "deid") and key not in ("redactions", "removed_sentences")
                    else f"{name}_{key}"] = value
            if name == "probe":
                state.facts = result.measurements
            if name in ("refine", "deid"):
                state.instruction = row.get("instruction")
            if result.caption is not None:
                state.task = replace(state.task, caption=result.caption)  # later stages see the screened text
            if result.drop_reason is not None:
                reasons.append(result.drop_reason)
                if decision == "keep":
                    decision, drop_stage = "drop", name
        for pending in state.looks.values():
            pending.cancel()  # a clip dropped before its screens: don't look at frames nobody will judge
        if state.regions:  # where the release must cover a face or text (JSON; never any text read)
            row["blur_regions"] = json.dumps(state.regions)
        row.update(decision=decision, keep=decision == "keep", drop_stage=drop_stage,
                   reason="; ".join(reasons) if reasons else None, stages_run=",".join(stages_run),
                   config_hash=self.hash, seconds=time.perf_counter() - began)
        if "instruction" not in row:
            row["instruction"] = None
        return row


NEEDS_DECODED = ("dynamics", "window", "face", "text", "vlm")


@dataclass
class ClipState:
    """What the stages of one clip pass on to each other (probe facts, the decoding pass, the instruction)."""
    task: ClipTask
    facts: dict = field(default_factory=dict)
    stream: object | None = None  # the clip's open PySceneDetect stream (decode.open_stream), probe to decode
    decoded: DecodedClip | None = None
    samples: list[int] = field(default_factory=list)  # frame numbers kept for the VLM
    looks: dict[int, Future] = field(default_factory=dict)  # frame number -> its Look, computed on the side
    instruction: str | None = None
    regions: list[dict] = field(default_factory=list)  # frame_hits blur: the hits' boxes for the release


class Look(NamedTuple):
    """What the cheap passes saw in one frame (full-resolution boxes x, y, w, h)."""
    faces: list[tuple[int, int, int, int]]  # confirmed faces
    crops: list[np.ndarray]  # grey crops of text-like regions, for OCR
    boxes: list[tuple[int, int, int, int]]  # those regions' boxes (frame_hits blur only)


def _kinds_text(kinds: dict[str, int]) -> str:
    # "1 age", not "age 1" (which reads as an age); "record number", not a column-like "record_number"
    return ", ".join(f"{count} {kind.replace('_', ' ')}" for kind, count in sorted(kinds.items())) or "none"


# --- local process pool -------------------------------------------------------------------------------------
_WORKER: Curator | None = None  # one Curator per worker process, built once by the pool initializer


def _own_breaker(path: str | Path | None, endpoint: str) -> Path | None:
    """One breaker file per endpoint (refine LLM, privacy VLM) beside the output."""
    return None if path is None else Path(f"{path}.{endpoint}.json")


def _init_worker(config: dict, cache_path: str | None, breaker_path: str | None, parent_pid: int) -> None:
    global _WORKER
    die_with_parent(parent_pid)  # a killed run leaves no worker behind (processes.py)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import cv2

        cv2.setNumThreads(1)  # parallelism comes from processes; don't oversubscribe cores
    except Exception:
        pass
    _WORKER = Curator(config, cache_path, breaker_path)


def _work(task: ClipTask) -> dict:
    assert _WORKER is not None
    row = _WORKER.process(task)
    row["worker"] = os.getpid()
    return row


def run_local(tasks: list[ClipTask], config: dict, cache_path: str | None, workers: int,
              breaker_path: str | None = None) -> Iterator[dict]:
    if workers <= 1:
        with Curator(config, cache_path, breaker_path) as curator:
            for task in tasks:
                yield {**curator.process(task), "worker": os.getpid()}
        return
    if cache_path is not None and config["refine"].get("cache", True):
        RefineCache(cache_path)  # create the file and switch it to WAL once, before the workers race to it
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(config, cache_path, breaker_path, os.getpid())) as pool:
        try:
            futures = {pool.submit(_work, task): task for task in tasks}
            for future in as_completed(futures):
                try:
                    row = future.result()
                except EndpointDown:
                    pool.shutdown(wait=True, cancel_futures=True)  # stop handing out clips; the others stop fast
                    raise
                except Exception as error:  # e.g. a decoder crash killed the worker: record it, retry next run
                    task = futures[future]
                    row = {"clip_id": task.clip_id, "video": task.video, "phase": task.phase,
                           "start_s": task.start_s, "end_s": task.end_s, "decision": "error", "keep": False,
                           "drop_stage": None, "reason": f"worker failed: {type(error).__name__}: {error}",
                           "stages_run": "", "config_hash": config_hash(config), "instruction": None}
                yield row
        except EndpointDown:
            raise
        except BaseException:  # Ctrl-C, SIGTERM as an exception, the caller closing us early: stop workers now
            stop_workers(pool)
            raise


# --- Ray -------------------------------------------------------------------------------------------------------
def _ray_batch(config: dict, cache_path: str | None, tasks: list[ClipTask]) -> list[dict]:
    with Curator(config, cache_path) as curator:
        return [{**curator.process(task), "worker": os.getpid()} for task in tasks]


def run_ray(tasks: list[ClipTask], config: dict, cache_path: str | None, address: str | None = None,
            batch_size: int = 8) -> Iterator[dict]:
    """Same rows as :func:`run_local`, computed by Ray tasks (a local Ray or a cluster at ``address``).

    On a cluster the ``ophora`` package must be importable on every node, the videos and the refine cache
    must sit on a file system all nodes share."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("--backend ray needs Ray: pip install 'ray==2.60.0'") from None
    started_here = not ray.is_initialized()
    if started_here:
        in_main_thread = threading.current_thread() is threading.main_thread()
        on_sigterm = signal.getsignal(signal.SIGTERM) if in_main_thread else None
        ray.init(address=address, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
        if in_main_thread and on_sigterm is not None:  # ray.init replaces the SIGTERM handler with sys.exit;
            signal.signal(signal.SIGTERM, on_sigterm)       # the caller's stays in charge (None: not set from Python)
        if address is None:
            start_reaper()  # a killed run takes its local Ray (agents included) with it
    remote = ray.remote(num_cpus=1)(_ray_batch)
    config_ref = ray.put(config)
    pending = [remote.remote(config_ref, cache_path, tasks[i:i + batch_size]) for i in range(0, len(tasks), batch_size)]
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield from ray.get(done[0])
    except BaseException:  # Ctrl-C, SIGTERM, an early close: stop the tasks (and the local Ray we started)
        if started_here:
            # Ending our job is enough: Ray kills a finished job's workers (and a local Ray goes with us).
            # No ray.cancel(force=True) here: it races the replies of tasks finishing at that moment, and
            # Ray then aborts the whole process ("Check failed ... CompletePendingTask", exit 1, seen in CI).
            ray.shutdown()
        else:  # the caller's Ray session (a notebook) lives on: cancel only what this run queued
            for ref in pending:
                ray.cancel(ref)
        raise


def preflight(config: dict, screens_elsewhere: bool = False) -> None:
    """Stop before the first clip when a configured endpoint is down (``EndpointDown`` says which and why), or,
    when ``screens_elsewhere`` (worker processes or Ray build them), when a frame screen cannot start: one line
    here (no face cascade, no OCR model) instead of a "worker failed" row for every clip."""
    privacy = config["privacy"]
    if screens_elsewhere and privacy["face_prescreen"]["enabled"]:
        from .privacy import FaceScreen

        FaceScreen(privacy["face_prescreen"])
    if screens_elsewhere and privacy["text_prescreen"]["enabled"]:
        from .privacy import TextScreen

        TextScreen(privacy["text_prescreen"])
    if config["refine"]["backend"] == "openai":
        ChatEndpoint.from_config(config["refine"]).preflight()
    vlm = config["privacy"]["vlm"]
    if vlm["enabled"] and vlm["backend"] == "openai":
        ChatEndpoint.from_config(vlm).preflight()
    deid_llm = config["privacy"]["deid"].get("llm") or {}
    if deid_llm.get("enabled"):
        ChatEndpoint.from_config(deid_llm).preflight()


# --- remote videos ---------------------------------------------------------------------------------------------
def fetch_remote(tasks: list[ClipTask], cache_dir: Path, current_hash: str) -> tuple[list[ClipTask], list[dict]]:
    """Download URL videos into the resumable cache (see fetch.py); a failed download is an error row that the
    next run retries (and resumes)."""
    from .fetch import DownloadError, fetch
    from .inputs import is_url

    ready, failed = [], []
    for task in tasks:
        if not is_url(task.video):
            ready.append(task)
            continue
        try:
            ready.append(replace(task, video=str(fetch(task.video, cache_dir))))
        except DownloadError as error:
            failed.append({"clip_id": task.clip_id, "video": task.video, "phase": task.phase, "start_s": task.start_s,
                           "end_s": task.end_s, "decision": "error", "keep": False, "drop_stage": "download",
                           "reason": f"download: {error}", "stages_run": "", "config_hash": current_hash,
                           "instruction": None})
    return ready, failed


# --- resumable run ---------------------------------------------------------------------------------------------
def load_previous(paths: dict[str, Path]) -> dict[str, dict]:
    """Rows from an earlier run (its parquet, then its journal, later lines winning)."""
    rows: dict[str, dict] = {}
    if paths["parquet"].is_file():
        for row in pd.read_parquet(paths["parquet"]).to_dict(orient="records"):
            rows[row["clip_id"]] = row
    if paths["journal"].is_file():
        with paths["journal"].open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
                rows[row["clip_id"]] = row
    return rows


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and value != value:
        return None
    return value


def rows_to_frame(rows: Iterable[dict], order: list[str]) -> pd.DataFrame:
    by_id = {row["clip_id"]: row for row in rows}
    frame = pd.DataFrame([by_id[clip_id] for clip_id in order if clip_id in by_id])
    for column in ("start_s", "end_s"):
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    lead = ["clip_id", "video", "decision", "keep", "drop_stage", "reason", "instruction"]
    return frame[[c for c in lead if c in frame.columns] + [c for c in frame.columns if c not in lead]]


def run_pipeline(tasks: list[ClipTask], config: dict, out: str | Path, backend: str = "local",
                 workers: int | None = None, ray_address: str | None = None, fresh: bool = False,
                 progress: Callable[[dict, int, int], None] | None = None) -> pd.DataFrame:
    """Curate ``tasks`` into ``out`` (parquet) and return the manifest; see the module docstring."""
    from .privacy import frame_hits

    frame_hits(config)  # a misspelt mode stops here, before any clip is read
    paths = output_paths(out)
    paths["parquet"].parent.mkdir(parents=True, exist_ok=True)
    if fresh:
        for key in ("parquet", "journal"):
            paths[key].unlink(missing_ok=True)
    current = config_hash(config)
    previous = load_previous(paths)
    wanted = {task.clip_id for task in tasks}
    done = {cid: row for cid, row in previous.items() if cid in wanted and row.get("config_hash") == current
            and row.get("decision") in ("keep", "drop")}
    todo = [task for task in tasks if task.clip_id not in done]
    todo, failed_downloads = fetch_remote(todo, paths["downloads"], config_hash(config))
    cache = str(paths["cache"]) if config["refine"].get("cache", True) else None
    workers = workers if workers is not None else int(config["run"].get("workers") or 0)
    workers = workers or (os.cpu_count() or 1)
    workers = max(1, min(workers, len(todo) or 1))
    breaker = str(paths["breaker"])
    for endpoint in ("refine", "vlm"):
        _own_breaker(breaker, endpoint).unlink(missing_ok=True)  # each run starts with closed breakers
    if todo:
        preflight(config, screens_elsewhere=backend != "local" or workers > 1)
    if backend == "local":
        results = run_local(todo, config, cache, workers, breaker)
    elif backend == "ray":
        results = run_ray(todo, config, cache, ray_address)
    else:
        raise ValueError(f"backend {backend!r} unknown; use local or ray")
    paths["config"].write_text(json.dumps({"config_hash": current, "config": config}, indent=2), encoding="utf-8")
    write_private(pd.DataFrame({"clip_id": [t.clip_id for t in tasks], "video": [t.video for t in tasks],
                                "narration": [t.caption for t in tasks]}), paths["narration"])
    rows = dict(done)
    stopped: EndpointDown | None = None
    try:
        with open(paths["journal"], "a", encoding="utf-8", opener=_owner_only) as journal:
            for count, row in enumerate(itertools.chain(failed_downloads, results), start=1):
                rows[row["clip_id"]] = row
                journal.write(json.dumps({k: _jsonable(v) for k, v in row.items()}) + "\n")
                journal.flush()
                if progress is not None:
                    progress(row, count, len(todo) + len(failed_downloads))
    except EndpointDown as error:  # the run stops; what is decided so far is saved below, the rest waits
        stopped = error
    finally:
        results.close()  # interrupted (Ctrl-C, SIGTERM): the workers stop now, not at interpreter exit
    frame = rows_to_frame(rows.values(), [task.clip_id for task in tasks])
    write_private(frame, paths["parquet"])  # a working file: local paths, reasons, hit frames; owner only
    paths["journal"].unlink(missing_ok=True)  # everything in it is now in the parquet
    if stopped is not None:
        raise stopped
    return pd.read_parquet(paths["parquet"])  # the manifest exactly as a reader of the file will see it
