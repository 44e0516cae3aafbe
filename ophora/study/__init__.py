"""Blinded reader studies: study files, the study database, blinding, analysis and the CLI.

Start with :class:`ophora.study.store.StudyStore` and :func:`ophora.study.definition.load_definition`;
results come from :mod:`ophora.study.analysis`. See docs/studies.md ("Python API").
"""

from ophora.study.definition import StudyDefinition, StudyDefinitionError, load_definition, parse_definition
from ophora.study.store import (AlreadyRatedError, BlindItem, InvalidRatingError, NotRatedError, ParityError, Progress,
                                StudyError, StudyStore, UnknownClipError, UnknownRaterError, UnknownStudyError)

__all__ = [
    "AlreadyRatedError", "BlindItem", "InvalidRatingError", "NotRatedError", "ParityError", "Progress", "StudyDefinition",
    "StudyDefinitionError", "StudyError", "StudyStore", "UnknownClipError", "UnknownRaterError",
    "UnknownStudyError", "load_definition", "parse_definition",
]
