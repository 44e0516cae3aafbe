"""Evaluation of generated clips: FID, FVD and CLIPScore against real clips, and downstream dataset export.

Modules: ``frechet`` (the distance), ``inception`` / ``i3d`` / ``clip_score`` (extractors and their weights),
``clips`` (inputs), ``metrics`` (features and the per-phase table), ``report`` (CSV, markdown, plotly, JSON),
``evaluate`` (one call end to end), ``export`` and ``train_classifier`` (downstream), ``cli``. Nothing here
imports torch at package import time.
"""
