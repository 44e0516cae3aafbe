"""Privacy filter: a local face pre-screen, then an optional vision-language model with a yes/no rubric.

Why two steps: the pre-screen is cheap and keeps frames on the machine, so clips with a visible face are
dropped before any frame could reach a server; the VLM then judges what a face detector cannot (burned-in
patient text, subtitles, watermarks, non-surgical scenes), as Ophora-28K did with Qwen2.5-VL-72B.
Frames go to the VLM as JPEG data URLs inside the request to the endpoint you configure, nowhere else.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .chat_client import ChatEndpoint, MalformedAnswer, image_part
from .inputs import ClipTask
from .stages import StageResult

PRIVACY_PROMPT_VERSION = "ophora-privacy-v1"
RUBRIC = {
    "face": "Is any human face visible, even partly (not just an eye through a surgical drape)?",
    "identifiable_person": "Could a person be identified (face, name tag, body beyond the draped eye)?",
    "on_screen_text": "Is there burned-in text on screen: patient name, ID, date, subtitles, captions or watermarks?",
    "non_surgical": "Is any frame not a surgical microscope view (slides, operating room, people, titles)?",
}
PRIVACY_PROMPT = (
    "These are frames sampled from one ophthalmic surgery video clip. Answer each question with yes or no, "
    "about any of the frames.\n" + "\n".join(f"- {key}: {question}" for key, question in RUBRIC.items()) +
    '\nReply with JSON only, for example {"face": "no", "identifiable_person": "no", "on_screen_text": "no", '
    '"non_surgical": "no"}.'
)


def sample_indices(fps: float, total: int, count: int, start_s: float | None = None,
                   end_s: float | None = None) -> list[int]:
    """``count`` frame numbers spread evenly over the clip window (the same frames whoever decodes them)."""
    first = int(round((start_s or 0.0) * fps)) if fps else 0
    last = min(total, int(round(end_s * fps))) if end_s is not None and fps else total
    if last <= first:
        return []
    return [int(i) for i in np.unique(np.linspace(first, last - 1, num=max(1, count)).round().astype(int))]


def fit_frame(frame_rgb: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscale so the longest side is at most ``max_side`` (None: unchanged)."""
    import cv2

    if max_side and max(frame_rgb.shape[:2]) > max_side:
        scale = max_side / max(frame_rgb.shape[:2])
        frame_rgb = cv2.resize(frame_rgb, (round(frame_rgb.shape[1] * scale), round(frame_rgb.shape[0] * scale)),
                               interpolation=cv2.INTER_AREA)
    return frame_rgb


def sample_frames(video: str, count: int, start_s: float | None = None, end_s: float | None = None,
                  max_side: int | None = None) -> list[np.ndarray]:
    """``count`` RGB frames spread evenly over the clip window, downscaled so the longest side <= max_side.

    The pipeline does not call this: it hands the screens the frames its single decoding pass kept
    (``decode.py``); this is for using a screen on its own."""
    import cv2

    capture = cv2.VideoCapture(str(video))
    try:
        indices = sample_indices(capture.get(cv2.CAP_PROP_FPS) or 0.0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
                                 count, start_s, end_s)
        frames = []
        for index in indices:
            capture.set(cv2.CAP_PROP_POS_FRAMES, int(index))
            ok, frame = capture.read()
            if ok:
                frames.append(fit_frame(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), max_side))
        return frames
    finally:
        capture.release()


def face_cascade_path(path: str | Path | None = None) -> Path:
    """The frontal-face Haar cascade: ``path`` if given, else the one opencv-python bundles (``cv2.data``)."""
    import cv2

    candidate = Path(path) if path else Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
    if not candidate.is_file():
        raise FileNotFoundError(f"Face cascade {candidate} not found: set privacy.face_prescreen.cascade to a "
                                f"haarcascade_frontalface_*.xml file (opencv-python 4.x bundles them in cv2.data).")
    return candidate


class FaceScreen:
    """Local face pre-screen over sampled frames with OpenCV's frontal-face Haar cascade."""

    def __init__(self, cfg: dict):
        import cv2

        self.cfg = cfg
        self.cascade_path = face_cascade_path(cfg.get("cascade"))
        self.cascade = cv2.CascadeClassifier(str(self.cascade_path))
        if self.cascade.empty():
            raise ValueError(f"OpenCV could not read the face cascade {self.cascade_path}")

    def faces(self, frame_rgb: np.ndarray) -> list[tuple[int, int, int, int]]:
        import cv2

        gray = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)
        min_size = int(self.cfg["min_face_fraction"] * min(gray.shape))
        found = self.cascade.detectMultiScale(gray, scaleFactor=float(self.cfg["scale_factor"]),
                                              minNeighbors=int(self.cfg["min_neighbors"]), minSize=(min_size, min_size))
        return [tuple(int(v) for v in rect) for rect in found]

    def count(self, frame_rgb: np.ndarray) -> int:
        """Faces in one sampled frame (downscaled to ``max_side`` first)."""
        return len(self.faces(fit_frame(frame_rgb, self.cfg["max_side"])))

    def judge(self, counts: list[int]) -> StageResult:
        """The verdict from the face counts of the sampled frames."""
        if not counts:
            return StageResult({}, "face_prescreen: no frame could be decoded")
        face_frames = sum(1 for n in counts if n)
        measured = {"frames_checked": len(counts), "face_frames": face_frames, "max_faces": max(counts)}
        if face_frames > int(self.cfg["max_face_frames"]):
            return StageResult(measured, f"privacy: face detected locally in {face_frames}/{len(counts)} frames")
        return StageResult(measured)

    def __call__(self, task: ClipTask, frames: list[np.ndarray] | None = None) -> StageResult:
        """``frames``: RGB frames already decoded (the pipeline's single pass); None: sample them here."""
        if frames is None:
            frames = sample_frames(task.video, int(self.cfg["frames"]), task.start_s, task.end_s, self.cfg["max_side"])
        return self.judge([self.count(frame) for frame in frames])


class TextScreen:
    """Local OCR pre-screen for burned-in text (patient names, dates, subtitles, watermarks) with Tesseract.

    Why the command-line tool: Debian's ``tesseract-ocr`` is a real offline OCR engine and needs no Python
    binding; frames go to it through a pipe and never leave the machine."""

    def __init__(self, cfg: dict):
        import shutil

        self.cfg = cfg
        self.binary = shutil.which("tesseract")
        if self.binary is None:
            raise FileNotFoundError("privacy.text_prescreen needs the tesseract command (Debian: apt-get install "
                                    "tesseract-ocr); install it or set privacy.text_prescreen.enabled=false")

    def words(self, frame_rgb: np.ndarray) -> list[str]:
        """Confident words Tesseract reads in one frame."""
        import subprocess

        import cv2

        png = cv2.imencode(".png", cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
        result = subprocess.run([self.binary, "stdin", "stdout", "--psm", "11", "-l", "eng", "tsv"], input=png,
                                capture_output=True, timeout=120, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"tesseract failed: {result.stderr.decode(errors='replace')[:200]}")
        found = []
        for line in result.stdout.decode("utf-8", errors="replace").splitlines()[1:]:
            fields = line.split("\t")
            if len(fields) < 12 or not fields[11].strip():
                continue
            try:
                confidence = float(fields[10])
            except ValueError:
                continue
            text = fields[11].strip()
            if confidence >= float(self.cfg["min_confidence"]) and \
                    sum(ch.isalnum() for ch in text) >= int(self.cfg["min_word_chars"]):
                found.append(text)
        return found

    def __call__(self, task: ClipTask, frames: list[np.ndarray] | None = None) -> StageResult:
        if frames is None:
            frames = sample_frames(task.video, int(self.cfg["frames"]), task.start_s, task.end_s, None)
        if not frames:
            return StageResult({}, "text_prescreen: no frame could be decoded")
        per_frame = [self.words(frame) for frame in frames]
        text_frames = [words for words in per_frame if len(words) >= int(self.cfg["min_words"])]
        measured = {"frames_checked": len(frames), "text_frames": len(text_frames),
                    "sample": " ".join(text_frames[0])[:200] if text_frames else None}
        if len(text_frames) > int(self.cfg["max_text_frames"]):
            return StageResult(measured, f"privacy: on-screen text read locally in {len(text_frames)}/{len(frames)} "
                                         f"frames ({measured['sample']!r})")
        return StageResult(measured)


def parse_rubric(text: str) -> dict[str, bool]:
    """Read the VLM's JSON yes/no answer; raise ``MalformedAnswer`` if any rubric item is missing or unclear."""
    match = re.search(r"\{.*\}", text or "", flags=re.DOTALL)
    if not match:
        raise MalformedAnswer(f"privacy answer has no JSON object: {text[:200]!r}")
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError as error:
        raise MalformedAnswer(f"privacy answer is not valid JSON ({error}): {text[:200]!r}") from None
    verdict = {}
    for key in RUBRIC:
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, bool):
            verdict[key] = value
        elif isinstance(value, str) and value.strip().lower() in ("yes", "no", "true", "false"):
            verdict[key] = value.strip().lower() in ("yes", "true")
        else:
            raise MalformedAnswer(f"privacy answer lacks a yes/no for {key!r}: {text[:200]!r}")
    return verdict


class VlmScreen:
    """Asks a vision-language model the rubric about sampled frames (OpenAI-compatible server or local)."""

    def __init__(self, cfg: dict, breaker_path: str | Path | None = None):
        self.cfg = cfg
        if cfg["backend"] not in ("openai", "transformers"):
            raise ValueError(f"privacy.vlm.backend {cfg['backend']!r} unknown; use openai or transformers")
        self.endpoint = ChatEndpoint.from_config(cfg, breaker_path) if cfg["backend"] == "openai" else None
        self._local = None

    def ask(self, frames: list[np.ndarray]) -> str:
        if self.endpoint is not None:
            import cv2

            parts = [image_part(cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes()) for f in frames]
            messages = [{"role": "user", "content": parts + [{"type": "text", "text": PRIVACY_PROMPT}]}]
            return self.endpoint.complete(messages, int(self.cfg["max_tokens"]), 0.0)
        return self._ask_local(frames)

    def _ask_local(self, frames: list[np.ndarray]) -> str:
        """Local transformers VLM (e.g. a downloaded Qwen2.5-VL folder)."""
        import torch
        from PIL import Image
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if self._local is None:
            path = self.cfg.get("model_path")
            if not path or not Path(path).is_dir():
                raise ValueError(f"privacy.vlm.model_path {path!r} is not a local model folder")
            self._local = (AutoProcessor.from_pretrained(path), AutoModelForImageTextToText.from_pretrained(path).eval())
        processor, model = self._local
        content = [{"type": "image"} for _ in frames] + [{"type": "text", "text": PRIVACY_PROMPT}]
        prompt = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        inputs = processor(text=[prompt], images=[Image.fromarray(f) for f in frames], return_tensors="pt")
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=int(self.cfg["max_tokens"]), do_sample=False)
        return processor.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]

    def __call__(self, task: ClipTask, frames: list[np.ndarray] | None = None) -> StageResult:
        if frames is None:
            frames = sample_frames(task.video, int(self.cfg["frames"]), task.start_s, task.end_s, self.cfg["max_side"])
        frames = [fit_frame(frame, self.cfg["max_side"]) for frame in frames]
        if not frames:
            return StageResult({}, "privacy_vlm: no frame could be decoded")
        error: MalformedAnswer | None = None
        for _ in range(2):  # one more try on a malformed answer; endpoint failures are retried in the client
            try:
                verdict = parse_rubric(self.ask(frames))
                break
            except MalformedAnswer as caught:
                error = caught
        else:
            raise error
        flagged = [key for key, value in verdict.items() if value]
        measured = {"prompt_version": PRIVACY_PROMPT_VERSION, "frames_sent": len(frames), **verdict}
        if flagged:
            return StageResult(measured, f"privacy: VLM flagged {', '.join(flagged)}")
        return StageResult(measured)
