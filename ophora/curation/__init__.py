"""Curation pipeline: narrated surgery videos -> a clean clip-instruction manifest (Ophora-160K's recipe).

Stages (each its own module, thresholds in ``default_config.yaml``): probe + resolution filter (``probe``),
PySceneDetect dynamics filter (``dynamics``), local face pre-screen and VLM privacy rubric (``privacy``),
LLM narrative refining (``refine``). ``pipeline.run_pipeline`` runs them resumably, in parallel or on Ray.
"""

from .config import load_config
from .inputs import ClipTask, read_tasks
from .pipeline import Curator, run_pipeline

__all__ = ["ClipTask", "Curator", "load_config", "read_tasks", "run_pipeline"]
