"""Fixtures for study tests (helpers live in tests/study/helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.study.helpers import write_study


@pytest.fixture
def study_file(tmp_path) -> Path:
    return write_study(tmp_path)


@pytest.fixture
def store_and_codes(tmp_path, study_file):
    """A populated SQLite study: 6 clips, 3 raters; yields (store, slug, codes)."""
    from ophora.study import StudyStore, load_definition

    definition = load_definition(study_file)
    store = StudyStore(tmp_path / "study.db")
    codes = store.create_study(definition, blind_dir=tmp_path / "blinded")
    store.import_clips(definition.slug, definition.clips())
    store.open_study(definition.slug)
    yield store, definition.slug, codes
    store.close()
