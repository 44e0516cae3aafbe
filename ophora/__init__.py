"""Ophora Studio: generate, judge, curate and train synthetic ophthalmic surgery video.

Subpackages, one per stage of the life cycle:
  ophora.generation  load the Ophora (CogVideoX) pipeline, generate clips with provenance, batch runs
  ophora.study       blinded reader studies and their database
  ophora.curation    the data pipeline (refining, dynamics, resolution and privacy filters)
  ophora.training    progressive video-instruction tuning (TPT, P2FT)
  ophora.eval        FID, FVD, CLIPScore and downstream export
"""

__version__ = "0.1.0"
