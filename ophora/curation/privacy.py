"""Privacy filter: local face and burned-in text screens of every frame, then an optional vision-language model.

Why in this order: the local screens are cheap cascades (a fast detector on every downscaled frame, the
costly check only where it fires) and keep frames on the machine, so clips with a visible face or on-screen
text are dropped before any frame could reach a server; the VLM then judges what they cannot (non-surgical
scenes, an identifiable person), as Ophora-28K did with Qwen2.5-VL-72B on sampled frames.
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


FRAME_HITS = ("drop", "blur")


def frame_hits(config: dict) -> str:
    """``privacy.frame_hits``: what a frame with a face or burned-in text does to its clip. ``drop`` (default):
    the clip is dropped. ``blur``: the clip is kept, its row records where the hits are, and the release covers
    them and screens the written video again (release.py). Checked before any clip is read."""
    from .config import ConfigError

    mode = config["privacy"].get("frame_hits", "drop")
    if mode not in FRAME_HITS:
        raise ConfigError(f"privacy.frame_hits is {mode!r}; use drop (a clip with a face or on-screen text is "
                          f"dropped) or blur (it is kept and the found regions are covered at release)")
    return mode


def face_cascade_path(path: str | Path | None = None) -> Path:
    """An OpenCV cascade file: ``path`` if given, else the frontal-face Haar cascade opencv-python bundles."""
    import cv2

    candidate = Path(path) if path else Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
    if not candidate.is_file():
        raise FileNotFoundError(f"Face cascade {candidate} not found: set privacy.face_prescreen.cascade to lbp, "
                                f"haar or an OpenCV cascade .xml file.")
    return candidate


def load_cascade(name: str | Path | None):
    """The face cascade named in the config: ``lbp`` (OpenCV's LBP frontal-face cascade, the copy scikit-image
    ships), ``haar`` or None (OpenCV's Haar frontal-face cascade, bundled with opencv-python), or a file path.

    Why LBP for the cheap pass: integer features make it about twice as fast as Haar per frame at equal or
    better recall (bench/bench_face_screen.py), and the screen runs on every frame. scikit-image's copy has one
    misspelt tag, corrected in memory here (the file on disk is not touched)."""
    import cv2

    cascade = cv2.CascadeClassifier()
    if str(name) == "lbp":
        try:
            import skimage.data
        except ImportError:
            raise FileNotFoundError("the LBP face cascade comes with scikit-image (requirements.txt): pip install "
                                    "scikit-image, or set privacy.face_prescreen.cascade to haar") from None
        path = Path(skimage.data.lbp_frontal_face_cascade_filename())
        text = path.read_text().replace("featuhreParams", "featureParams")
        storage = cv2.FileStorage(text, cv2.FILE_STORAGE_READ | cv2.FILE_STORAGE_MEMORY)
        cascade.read(storage.getFirstTopLevelNode())
    else:
        path = face_cascade_path(None if name in (None, "haar") else name)
        cascade.load(str(path))
    if cascade.empty():
        raise ValueError(f"OpenCV could not read the face cascade {path}")
    return cascade


def small_gray(frame_bgr: np.ndarray, max_side: int) -> np.ndarray:
    """The downscaled grey frame the cheap detectors look at: grey first, so the resize moves one channel."""
    import cv2

    return fit_frame(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY), max_side)


def _scaled(box: tuple[int, int, int, int], scale: float, pad: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """``box`` (x, y, w, h) of a downscaled frame as a padded box of the full frame of ``shape``."""
    x, y, w, h = (v * scale for v in box)
    margin = pad * max(w, h) if pad >= 1 else pad * h
    x0, y0 = max(0, int(x - margin)), max(0, int(y - margin))
    x1, y1 = min(shape[1], int(x + w + margin) + 1), min(shape[0], int(y + h + margin) + 1)
    return x0, y0, x1 - x0, y1 - y0


class FaceScreen:
    """Local face screen of every frame: OpenCV's LBP frontal-face cascade on the downscaled frame, and where
    it fires a stricter check (the Haar ``alt2`` cascade on the full-resolution region) that must agree.

    Why a cascade: the cheap pass costs a few milliseconds per small frame, so every frame can be screened;
    the strict pass runs on the rare frames where the first fires and removes most false alarms (textured
    tissue read as a face) without costing the clips that have none."""

    def __init__(self, cfg: dict):
        import cv2

        self.cfg = cfg
        self.cascade = load_cascade(cfg.get("cascade"))
        self.strict = load_cascade(cfg.get("strict_cascade") or
                                   Path(cv2.data.haarcascades) / "haarcascade_frontalface_alt2.xml")

    def faces(self, frame_rgb: np.ndarray, cascade=None, min_neighbors: int | None = None) -> list[tuple[int, int, int, int]]:
        """Face boxes in one frame (RGB or grey) at its own size."""
        import cv2

        gray = frame_rgb if frame_rgb.ndim == 2 else cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)
        min_size = max(20, int(self.cfg["min_face_fraction"] * min(gray.shape)))
        found = (cascade or self.cascade).detectMultiScale(
            gray, scaleFactor=float(self.cfg["scale_factor"]),
            minNeighbors=int(self.cfg["min_neighbors"] if min_neighbors is None else min_neighbors),
            minSize=(min_size, min_size))
        return [tuple(int(v) for v in rect) for rect in found]

    def face_boxes(self, frame: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Confirmed faces in one frame (BGR or grey, full resolution), as full-resolution boxes (x, y, w, h): the
        cheap pass on the frame shrunk to ``max_side``, each candidate confirmed by the strict cascade on its
        full-resolution region. A box is the whole region the strict pass looked in (the candidate padded by half
        its height on every side), so it covers the head, not only the detected face. One path for the
        pipeline, the screen on its own and the measurement, so the measured figures are the pipeline's."""
        import cv2

        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        small = fit_frame(gray, int(self.cfg["max_side"]))
        found = self.faces(small)
        if not found:
            return []
        scale = max(gray.shape[:2]) / max(small.shape)
        confirmed = []
        for box in found:
            x, y, w, h = _scaled(box, scale, 0.5, gray.shape)
            region = gray[y:y + h, x:x + w]
            strict_min = max(20, int(0.5 * min(box[2], box[3]) * scale))
            if len(self.strict.detectMultiScale(region, scaleFactor=1.1, minNeighbors=int(self.cfg["strict_min_neighbors"]),
                                                minSize=(strict_min, strict_min))):
                confirmed.append((x, y, w, h))
        return confirmed

    def hit(self, frame: np.ndarray) -> bool:
        """Whether one frame (BGR or grey, full resolution) shows a confirmed face (see ``face_boxes``)."""
        return bool(self.face_boxes(frame))

    def judge(self, hits: list[int], checked: int, first: int, end: int) -> StageResult:
        """The verdict from the frames (absolute numbers) with a face, out of ``checked`` frames [first, end)."""
        if not checked:
            return StageResult({}, "face_prescreen: no frame could be decoded")
        measured = {"frames_checked": checked, "first_frame": first, "end_frame": end, "face_frames": len(hits),
                    "hit_frames": json.dumps(hits[:50])}
        if len(hits) > int(self.cfg["max_face_frames"]):
            return StageResult(measured, f"privacy: face detected locally in {len(hits)}/{checked} frames")
        return StageResult(measured)

    def __call__(self, task: ClipTask, frames: list[np.ndarray] | None = None) -> StageResult:
        """Screen every frame of the clip window (``frames``: RGB frames already decoded; None: decode here)."""
        frames = decode_window(task) if frames is None else frames
        import cv2

        hits = [i for i, frame in enumerate(frames) if self.hit(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))]
        return self.judge(hits, len(frames), 0, len(frames))


def decode_window(task: ClipTask) -> list[np.ndarray]:
    """Every RGB frame of the clip window, for using a screen on its own (the pipeline screens its single pass)."""
    import cv2

    capture = cv2.VideoCapture(str(task.video))
    try:
        fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        first = int(round((task.start_s or 0.0) * fps))
        last = int(round(task.end_s * fps)) if task.end_s is not None and fps else None
        capture.set(cv2.CAP_PROP_POS_FRAMES, first)
        frames, index = [], first
        while last is None or index < last:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            index += 1
        return frames
    finally:
        capture.release()


def tessdata_dir(system: Path = Path("/usr/share/tesseract-ocr")) -> Path:
    """The folder with Tesseract's English model (``eng.traineddata``): ``TESSDATA_PREFIX``, then tesserocr's
    built-in default, then Debian's ``tesseract-ocr-eng`` (``system``/<version>/tessdata).

    Why searched: the tesserocr wheel bundles the engine but no model, and its default folder is usually empty."""
    import os

    import tesserocr

    candidates = []
    if os.environ.get("TESSDATA_PREFIX"):
        prefix = Path(os.environ["TESSDATA_PREFIX"])
        candidates += [prefix, prefix / "tessdata"]  # Tesseract 4+ names the folder itself; older, its parent
    candidates.append(Path(tesserocr.get_languages()[0]))
    candidates += sorted(Path(system).glob("*/tessdata"), reverse=True)
    for folder in candidates:
        if (folder / "eng.traineddata").is_file():
            return folder
    raise FileNotFoundError("privacy.text_prescreen needs Tesseract's English model eng.traineddata (Debian: apt-get "
                            "install tesseract-ocr-eng; scripts/install_system_deps.sh installs it; or point "
                            "TESSDATA_PREFIX at its folder), or set privacy.text_prescreen.enabled=false (the release "
                            "then refuses the clips)")


class TextScreen:
    """Local screen for burned-in text (patient names, dates, ids, subtitles) on every frame, as a cascade.

    The cheap pass runs on every downscaled frame: strokes of high local contrast (morphological gradient),
    joined along a line, in boxes shaped like a line of text and crossed by many strokes. Only the regions
    where it fires are read by Tesseract OCR at full resolution, in process (``tesserocr``: one engine per
    screen, loaded once, so a region costs its recognition and no process start-up or model load; a static
    overlay repeated over frames is read once). A frame has text when OCR reads a confident word there.
    Frames never leave the machine. The engine is not thread-safe (shared between threads unguarded, it
    crashes the process): a lock keeps it to one thread at a time; the pipeline reads on its main thread, its
    side thread only finds regions. The cascade's recall against OCR of every whole frame is measured in
    tests/curation/test_privacy.py and bench/bench_text_screen.py."""

    def __init__(self, cfg: dict):
        import threading

        try:
            from tesserocr import PyTessBaseAPI
        except ImportError:
            raise RuntimeError("privacy.text_prescreen needs the tesserocr package (pip install -r requirements.txt), "
                               "or set privacy.text_prescreen.enabled=false (the release then refuses the clips)"
                               ) from None
        self.cfg = cfg
        self.tessdata = tessdata_dir()
        self.api = PyTessBaseAPI(path=str(self.tessdata), lang="eng")
        self._lock = threading.Lock()

    def regions(self, small: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Boxes (x, y, w, h) of the small grey frame that look like a line of text (the cheap pass).

        A line of text is several letters side by side: strokes of high local contrast joined along a line, in a
        box wide, not too tall and stroked over a quarter of its area, that a row through its middle crosses
        many times. The last test is what tells letters from an instrument edge or a glare, which have a text
        line's shape but are crossed once or twice (measured in bench/bench_text_screen.py)."""
        import cv2

        gradient = cv2.morphologyEx(small, cv2.MORPH_GRADIENT, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
        strokes = cv2.threshold(gradient, int(self.cfg["min_contrast"]) - 1, 1, cv2.THRESH_BINARY)[1]
        joined = cv2.morphologyEx(strokes, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (21, 3)))
        # the outer outlines of the joined blobs (those inside another's hole included): their boxes are the
        # connected components' boxes, found in a fifth of the time labelling every pixel takes
        outlines, hierarchy = cv2.findContours(joined, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        boxes = []
        max_h, min_w = 0.25 * small.shape[0], float(self.cfg["min_line_fraction"]) * small.shape[1]
        for outline, (_, _, _, parent) in zip(outlines, hierarchy[0] if hierarchy is not None else ()):
            if parent >= 0:  # the outline of a hole
                continue
            x, y, w, h = cv2.boundingRect(outline)
            if 4 <= h <= max_h and w >= 2.5 * h and w >= min_w and \
                    cv2.countNonZero(joined[y:y + h, x:x + w]) >= 0.25 * w * h and \
                    self.strokes_across(small[y:y + h, x:x + w]) >= int(self.cfg["min_strokes_across"]):
                boxes.append((x, y, w, h))
        return boxes

    @staticmethod
    def strokes_across(box: np.ndarray) -> int:
        """How many dark-to-light steps the busiest row through the middle of a grey box crosses, after
        splitting the box into ink and ground (Otsu): one or two per letter, one or two in all for an edge or a
        glare."""
        import cv2

        ink = cv2.threshold(box, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[1]
        middle = ink[box.shape[0] // 5: box.shape[0] - box.shape[0] // 5]
        return int((np.diff(middle, axis=1) == 1).sum(axis=1).max()) if middle.size else 0

    def boxes(self, shape: tuple[int, ...], small: np.ndarray, pad: float = 0.3) -> list[tuple[int, int, int, int]]:
        """Full-resolution boxes (x, y, w, h) of the text-like regions the cheap pass finds in ``small`` (the frame
        of ``shape`` downscaled), padded by ``pad`` of their height: 0.3 for OCR, more where they are covered."""
        scale = max(shape[:2]) / max(small.shape)
        return [_scaled(box, scale, pad, shape) for box in self.regions(small)]

    def crops(self, frame: np.ndarray, small: np.ndarray) -> list[np.ndarray]:
        """Full-resolution grey crops (``frame``: BGR or grey) of the regions the cheap pass finds (empty: none)."""
        import cv2

        boxes = self.boxes(frame.shape, small)
        if not boxes:
            return []
        gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        return [gray[y:y + h, x:x + w] for x, y, w, h in boxes]

    def read(self, crops_by_frame: dict[int, list[np.ndarray]], enough: int | None = None) -> dict[int, int]:
        """Confident OCR words per frame, from the crops the cheap pass found (frames without crops are not read).

        A crop that repeats an earlier one (a static overlay over many frames) is not read again. ``enough``:
        stop once this many frames have text (the clip is dropped anyway); the frames not read are left out."""
        import cv2

        read: list[tuple[np.ndarray, np.ndarray, int]] = []  # (shape key, thumbnail, words) of crops read
        per_frame: dict[int, int] = {}
        for index, crops in sorted(crops_by_frame.items()):
            words = 0
            for crop in crops:
                if crop.shape[0] < 48:  # small text enlarged: Tesseract reads best at 20-30 px letters
                    crop = cv2.resize(crop, None, fx=48 / crop.shape[0], fy=48 / crop.shape[0],
                                      interpolation=cv2.INTER_CUBIC)
                thumb = cv2.resize(crop, (64, 16), interpolation=cv2.INTER_AREA).astype(np.int16)
                known = next((n for shape, t, n in read if shape == crop.shape and np.abs(t - thumb).mean() < 4), None)
                if known is None:
                    known = self._read_region(crop)
                    read.append((crop.shape, thumb, known))
                words += known
            per_frame[index] = words
            if enough is not None and sum(1 for n in per_frame.values() if n >= int(self.cfg["min_words"])) >= enough:
                break
        return per_frame

    def _read_region(self, crop: np.ndarray) -> int:
        """Confident words OCR reads in one region, trying views of it until one reads a word: as it is,
        inverted, then with the tissue behind the letters flattened away (top-hat: light letters; black-hat:
        dark ones). Why several views: Tesseract reads dark letters on a plain light ground best, and burned-in
        text comes light or dark, on a band or straight over shaded tissue (bench/bench_text_screen.py)."""
        import cv2

        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (crop.shape[0] // 2 | 1,) * 2)  # wider than a stroke

        def flattened(operation: int) -> np.ndarray:
            return 255 - cv2.normalize(cv2.morphologyEx(crop, operation, kernel), None, 0, 255, cv2.NORM_MINMAX)

        views = (lambda: crop, lambda: 255 - crop, lambda: flattened(cv2.MORPH_TOPHAT),
                 lambda: flattened(cv2.MORPH_BLACKHAT))
        for view in views:
            found = self._words(cv2.copyMakeBorder(view(), 16, 16, 16, 16, cv2.BORDER_CONSTANT, value=255), layout=6)
            if found:
                return len(found)
        return 0

    def _words(self, gray: np.ndarray, layout: int = 11) -> list[tuple[int, int, int, str]]:
        """Confident words Tesseract reads in one image: (left, top, height, text). ``layout``: Tesseract's page
        segmentation mode, 11 (sparse text anywhere: a whole frame) or 6 (a block of lines: one region)."""
        from tesserocr import RIL, iterate_level

        gray = np.ascontiguousarray(gray, dtype=np.uint8)
        found = []
        with self._lock:
            self.api.SetPageSegMode(layout)
            self.api.SetImageBytes(gray.tobytes(), gray.shape[1], gray.shape[0], 1, gray.shape[1])
            self.api.Recognize()
            for word in iterate_level(self.api.GetIterator(), RIL.WORD):
                if word.Empty(RIL.WORD):
                    continue
                text = (word.GetUTF8Text(RIL.WORD) or "").strip()
                if word.Confidence(RIL.WORD) >= float(self.cfg["min_confidence"]) and \
                        sum(ch.isalnum() for ch in text) >= int(self.cfg["min_word_chars"]):
                    left, top, _, bottom = word.BoundingBox(RIL.WORD)
                    found.append((left, top, bottom - top, text))
        return found

    def words(self, frame_rgb: np.ndarray) -> int:
        """Confident words OCR reads in the whole frame (the reference the cascade's recall is measured against)."""
        import cv2

        return len(self._words(cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)))

    def cascade_recall(self, frames_rgb: list[np.ndarray]) -> dict:
        """Measure the cascade against Tesseract on every whole frame: of the frames where whole-frame OCR
        reads a confident word, the share the cascade also flags (and how many frames each flags; the frame
        numbers where the cheap pass fired, the cascade flagged and whole-frame OCR read, to see what passes)."""
        import cv2

        min_words = int(self.cfg["min_words"])
        crops = {}
        for index, frame in enumerate(frames_rgb):
            bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
            found = self.crops(bgr, small_gray(bgr, int(self.cfg["max_side"])))
            if found:
                crops[index] = found
        cascade = {index for index, count in self.read(crops).items() if count >= min_words}
        whole = {index for index, frame in enumerate(frames_rgb) if self.words(frame) >= min_words}
        return {"frames": len(frames_rgb), "cheap_pass_fired": len(crops), "cascade_frames": len(cascade),
                "ocr_frames": len(whole), "both": len(cascade & whole),
                "recall": len(cascade & whole) / len(whole) if whole else None,
                "fired": sorted(crops), "flagged": sorted(cascade), "read_whole": sorted(whole)}

    def judge(self, words: dict[int, int], checked: int, first: int, end: int) -> StageResult:
        """The verdict: frames where OCR read text, out of ``checked`` frames [first, end). No text is kept."""
        if not checked:
            return StageResult({}, "text_prescreen: no frame could be decoded")
        hits = sorted(index for index, count in words.items() if count >= int(self.cfg["min_words"]))
        measured = {"frames_checked": checked, "first_frame": first, "end_frame": end, "ocr_frames": len(words),
                    "text_frames": len(hits), "hit_frames": json.dumps(hits[:50])}
        if len(hits) > int(self.cfg["max_text_frames"]):
            return StageResult(measured, f"privacy: on-screen text read locally in {len(hits)}/{checked} frames")
        return StageResult(measured)

    def __call__(self, task: ClipTask, frames: list[np.ndarray] | None = None) -> StageResult:
        """Screen every frame of the clip window (``frames``: RGB frames already decoded; None: decode here)."""
        import cv2

        frames = decode_window(task) if frames is None else frames
        crops = {}
        for index, frame in enumerate(frames):
            bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
            found = self.crops(bgr, small_gray(bgr, int(self.cfg["max_side"])))
            if found:
                crops[index] = found
        return self.judge(self.read(crops), len(frames), 0, len(frames))


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
