"""The prediction cache keeps two engines' answers apart, and Systems that name their engine key as before."""

import pytest

from tailorlm.core.system import System
from tailorlm.eval.cache import system_cache_key

pytestmark = pytest.mark.unit

CT2 = {"engine": "ct2", "compute_type": "float32", "ctranslate2": "4.8.5"}


def test_auto_keys_by_the_engine_it_resolved_to() -> None:
    system = System(model="some/hub-model")
    keys = {
        system_cache_key(system, {"engine": "hf"}),
        system_cache_key(system, CT2),
        system_cache_key(system, {**CT2, "compute_type": "int8"}),
        system_cache_key(system, {**CT2, "ctranslate2": "4.9.0"}),
    }
    assert len(keys) == 4


def test_a_named_engine_keys_by_the_system_alone() -> None:
    system = System(model="some/hub-model", engine="hf")
    assert system_cache_key(system, {"engine": "hf"}) == system_cache_key(system)
