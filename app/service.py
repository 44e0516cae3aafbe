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

from ophora.generation.engine import (GenerationCancelled, GenerationInputError, GenerationRequest,
                                      GenerationResult, StepProgress, generate)
from ophora.generation.loading import LoadedPipeline, LoadOptions, ModelLoadError, load_pipeline

logger = logging.getLogger(__name__)

OOM_MESSAGE = ("The GPU ran out of memory for this clip. Nothing was saved. Try fewer frames or a smaller size, "
               "or restart with `--memory model_offload` (or `sequential_offload`) and/or `--quantization int8`.")


def explain_error(error: BaseException) -> str:
    """A message a clinician can act on, for any error generation can raise."""
    import torch

    if isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower():
        return OOM_MESSAGE
    if isinstance(error, GenerationCancelled):
        return f"Cancelled: {error} Nothing was saved."
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
        if self.loaded is not None:
            note = f"\n\n⚠️ {self.load_error}" if self.load_error else ""
            return f"**Model in use.** {self.loaded.report}{note}"
        return (f"**No model loaded: generation is unavailable.** {self.load_error or ''}\n\n"
                f"Rating and studies still work.")

    def option_values(self) -> dict:
        return asdict(self.options)

    # ------------------------------------------------------------------ generation
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
                start = time.perf_counter()
                try:
                    result = generate(self.loaded, request, progress=on_step, cancel=event)
                finally:
                    self._release_memory()
                with self._state:
                    self._durations = (self._durations + [time.perf_counter() - start])[-20:]
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
    eta = f", about {progress.eta_s:.0f} s left" if progress.eta_s is not None else ""
    return f"Denoising step {progress.step}/{progress.total}{eta}"
