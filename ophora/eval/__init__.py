"""Evaluation of generated clips: FID, FVD, CD-FVD, JEDi and CLIPScore against real clips, with bootstrap
intervals, and downstream dataset export.

Modules: ``frechet`` (the distance), ``mmd`` (JEDi's distance), ``intervals`` (bootstrap, 1/N extrapolation),
``inception`` / ``i3d`` / ``videomae`` / ``vjepa`` / ``clip_score`` (extractors and their weights), ``clips``
(inputs), ``metrics`` (features and the per-phase table), ``report`` (CSV, markdown, plotly, JSON), ``evaluate``
(one call end to end), ``compare`` (A vs B), ``paper_protocol`` (Table 1 as one run), ``export`` and
``train_classifier`` (downstream), ``cli``. Nothing here
imports torch at package import time.
"""
