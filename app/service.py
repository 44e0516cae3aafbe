"""The one GPU worker behind every tab: loads the pipeline once, runs one clip at a time, cancels, estimates waits.

Why a service object and a lock on top of Gradio's queue (``concurrency_limit=1`` on the "gpu" concurrency
group): the queue orders visitors and shows their place, the lock guarantees that a model reload or a
second event type never runs beside a generation. Errors become messages that say what to do, and the
app stays usable after any of them.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, replace

from app.glossary import duration
from ophora.generation.engine import (GenerationCancelled, GenerationInputError, GenerationRequest,
                                      GenerationResult, StepProgress, generate, model_spec)
from ophora.generation.loading import LoadedPipeline, LoadOptions, ModelLoadError, load_pipeline
from ophora.generation.request import check_request, resolve_request

logger = logging.getLogger(__name__)

OOM_MESSAGE = ("The GPU ran out of memory for this clip. Nothing was saved. Try fewer frames or a smaller size, "
               "or under Advanced choose \"Move parts to the CPU\" for GPU memory saving and/or smaller weights "
               "(8-bit), then Apply. (For whoever starts the app: `--memory model_offload`.)")


def explain_error(error: BaseException) -> str:
    """A message a clinician can act on, for any error generation can raise."""
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower():
        return OOM_MESSAGE
    if isinstance(error, GenerationCancelled):
        return f"{error} Nothing was saved."
    if isinstance(error, (GenerationInputError, ModelLoadError)):
        return str(error)
    return f"Generation failed: {type(error).__name__}: {error}. The app is still usable; try again."


class GenerationService:
    """Holds the loaded pipeline (or why it could not be loaded) and runs generations one at a time."""

    def __init__(self, options: LoadOptions, *, load_now: bool = True) -> None:
        self.options = options
        self.loaded: LoadedPipeline | None = None
        self.load_error: str | None = None
        self._gpu = threading.Lock()
        self._cancel: dict[str, threading.Event] = {}
        self._waiting = 0
        self._durations: list[float] = []
        self._step_seconds: list[float] = []  # recent denoising steps of the loaded model, for wait estimates
        self._current: tuple[int, int] | None = None  # (steps done, steps total) of the clip on the GPU
        self._current_key: str | None = None
        self._overhead_s = 0.0  # a clip's time beyond its steps (text encoding, VAE decode), from the last clip
        self._line: dict[str, tuple[float, int]] = {}  # visitor -> (time they joined, steps their clip takes)
        self._state = threading.Lock()
        if load_now:
            self.load(options)

    # ------------------------------------------------------------------ model
    def load(self, options: LoadOptions) -> str:
        """(Re)load the pipeline; on failure keep the app running and remember the message for the banner.

        The old pipeline is dropped first (a GPU rarely holds two). If new settings fail where the old ones
        worked, the old settings are loaded again, so a bad choice in "Advanced" does not end generation."""
        with self._gpu:
            previous = self.options if self.loaded is not None else None
            self.loaded = None
            with self._state:  # a new model has new step times
                self._durations, self._step_seconds = [], []
            try:
                self.loaded = load_pipeline(options)
                self.options = options
                self.load_error = None
            except (ModelLoadError, ValueError, OSError, RuntimeError) as error:
                self.load_error = str(error)
                logger.error("model not loaded: %s", error)
                if previous is not None and previous != options:
                    self._release_memory()
                    try:
                        self.loaded = load_pipeline(previous)
                        self.options = previous
                        self.load_error = (f"Could not apply the new settings ({error}); "
                                           f"the previous settings are loaded again.")
                    except (ModelLoadError, ValueError, OSError, RuntimeError) as again:
                        self.load_error = f"{error} (the previous settings failed too: {again})"
        return self.banner()

    def reload(self, **changes) -> str:
        return self.load(replace(self.options, **changes))

    def banner(self) -> str:
        """Which model makes the clips, in plain words; the precision and memory choices (and why) sit behind
        "Technical details" for the operator."""
        if self.loaded is not None:
            from ophora.generation.tiny import TINY_NOTICE

            note = f"\n\n⚠️ {self.load_error}" if self.load_error else ""
            where = "the GPU" if self.loaded.plan.device.startswith("cuda") else "the processor (no GPU: slow)"
            plain = TINY_NOTICE if self.loaded.is_tiny else f"Clips are made by {self.loaded.options.model} on {where}."
            return (f"**Model in use.** {plain}{note}\n\n<details><summary>Technical details</summary>\n\n"
                    f"{self.loaded.report}\n\n</details>")
        return (f"**No model loaded: generation is unavailable.** {self.load_error or ''}\n\n"
                f"Rating and studies still work.")

    def option_values(self) -> dict:
        return asdict(self.options)

    # ------------------------------------------------------------------ generation
    def check(self, request: GenerationRequest) -> None:
        """The request checks against the loaded model's sizes, before waiting for the GPU (no-op if no model:
        ``generate`` then says why)."""
        if self.loaded is not None:
            spec = model_spec(self.loaded)
            check_request(resolve_request(spec, request), spec)

    def generate(self, request: GenerationRequest, *, key: str, on_step=None) -> GenerationResult:
        """Run one clip for session ``key`` (cancellable with ``cancel(key)``); raises on any failure."""
        if self.loaded is None:
            raise ModelLoadError(self.banner().replace("**", ""))
        event = threading.Event()
        with self._state:
            self._cancel[key] = event
            self._waiting += 1
        try:
            with self._gpu:
                with self._state:
                    self._waiting -= 1
                if event.is_set():  # cancelled while waiting (a kiosk visitor closed the tab): never start
                    raise GenerationCancelled("Cancelled before it started.")
                start = time.perf_counter()
                last = [start]
                clip_steps: list[float] = []

                def track(step: StepProgress) -> None:
                    now = time.perf_counter()
                    clip_steps.append(now - last[0])
                    with self._state:
                        if step.step > 1 or not self._step_seconds:  # the first step carries warm-up
                            self._step_seconds = (self._step_seconds + [now - last[0]])[-50:]
                        self._current = (step.step, step.total)
                    last[0] = now
                    if on_step is not None:
                        on_step(step)

                with self._state:
                    self._current, self._current_key = (0, request.num_inference_steps), key
                try:
                    result = generate(self.loaded, request, progress=track, cancel=event)
                finally:
                    with self._state:
                        self._current = self._current_key = None
                    self._release_memory()
                with self._state:
                    duration = time.perf_counter() - start
                    self._durations = (self._durations + [duration])[-20:]
                    self._overhead_s = max(0.0, duration - sum(clip_steps))
                return result
        finally:
            with self._state:
                if self._cancel.get(key) is event:
                    del self._cancel[key]

    def cancel(self, key: str) -> bool:
        with self._state:
            event = self._cancel.get(key)
        if event is None:
            return False
        event.set()
        return True

    def join_line(self, key: str, steps: int, stale_after_s: float = 3600.0) -> tuple[int, float | None]:
        """Register a visitor's clip of ``steps`` steps; return (their place, counting the clip on the GPU as
        1st; seconds until their clip is done, or ``None`` before any step has been timed). The estimate uses the
        loaded model's measured step time, so it exists from the first steps of the first clip."""
        now = time.monotonic()
        with self._state:
            self._line = {k: v for k, v in self._line.items() if now - v[0] < stale_after_s}
            self._line.setdefault(key, (now, steps))
        return self.place_in_line(key) or (1, None)

    def place_in_line(self, key: str) -> tuple[int, float | None] | None:
        """(place, seconds until done) of a visitor already in line, as in ``join_line``; ``None`` once they
        left it (their tab was closed), so asking never puts anyone back in line."""
        with self._state:
            if key not in self._line:
                return None
            joined, steps = self._line[key]
            waiting = [(k, n) for k, (t, n) in sorted(self._line.items(), key=lambda kv: kv[1][0])
                       if t < joined and k != self._current_key]
            step_s = sum(self._step_seconds) / len(self._step_seconds) if self._step_seconds else None
            current = self._current if self._current_key != key else None
            overhead = self._overhead_s
        place = len(waiting) + (current is not None) + 1
        if step_s is None:
            return place, None
        wait = sum(n * step_s + overhead for _, n in waiting)
        if current is not None:
            wait += (current[1] - current[0]) * step_s + overhead
        return place, wait + steps * step_s + overhead

    def running_step(self, key: str) -> tuple[int, int] | None:
        """(steps done, steps total) while ``key``'s clip is on the GPU, else ``None``."""
        with self._state:
            return self._current if self._current_key == key else None

    def step_seconds(self) -> float | None:
        with self._state:
            return sum(self._step_seconds) / len(self._step_seconds) if self._step_seconds else None

    def leave_line(self, key: str) -> None:
        with self._state:
            self._line.pop(key, None)

    def typical_seconds(self) -> float | None:
        with self._state:
            return sum(self._durations) / len(self._durations) if self._durations else None

    def busy(self) -> bool:
        return self._gpu.locked()

    @staticmethod
    def _release_memory() -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def format_step(progress: StepProgress) -> str:
    eta = f", about {duration(progress.eta_s)} left" if progress.eta_s is not None else ""
    return f"Refining step {progress.step} of {progress.total}{eta}"
