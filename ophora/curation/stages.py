"""What every stage returns: its measurements and, when it drops the clip, why.

Why one small type: the pipeline writes every stage's measurements into the clip's row whatever the verdict,
so a researcher can see how close a kept clip came to a threshold, and re-threshold without re-measuring.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StageResult:
    measurements: dict = field(default_factory=dict)
    drop_reason: str | None = None  # None: the clip passes this stage
    caption: str | None = None  # a screened caption the later stages use instead of the task's


class RetryableError(RuntimeError):
    """A failure that says nothing about the clip (endpoint down, timeout): the clip stays undecided and a
    rerun tries it again."""
