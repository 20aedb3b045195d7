"""An index folder that a killed first ingest left with only atomic-write leftovers can be started over."""

from __future__ import annotations

from pathlib import Path

import pytest

from tailorlm.errors import TailorError
from tailorlm.rag.index import _read_config

pytestmark = pytest.mark.unit


def test_leftovers_of_a_killed_first_ingest_do_not_block_the_next(tmp_path: Path) -> None:
    (tmp_path / ".index.yaml.k3j2.tmp").write_text("embedder: {na")  # killed before os.replace
    assert _read_config(str(tmp_path)) is None


def test_a_folder_with_other_content_is_still_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(TailorError, match="not a tailorlm index"):
        _read_config(str(tmp_path))
