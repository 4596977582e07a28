"""The decoders a peer's bytes reach refuse bad input only in their documented way.

The loop of benchmarks/fuzz_decoders.py (mutations of valid messages, sync requests and
frames) on a bounded number of inputs, and hypothesis on raw bytes and JSON for the gossip
and sync parsers. The benchmark runs the same loop on a million inputs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

_SPEC = importlib.util.spec_from_file_location(
    "fuzz_decoders", Path(__file__).resolve().parents[3] / "benchmarks" / "fuzz_decoders.py"
)
fuzz = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(fuzz)  # type: ignore[union-attr]

TARGETS = fuzz.targets()
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=20,
)


def test_mutated_inputs_never_crash_a_decoder() -> None:
    runs, crashes = fuzz.run(3_000, seed=7)
    assert runs == 3_000 * len(TARGETS)
    assert crashes == []


@settings(max_examples=300, deadline=None, derandomize=True)
@given(data=st.binary(max_size=300) | JSON.map(orjson.dumps))
def test_raw_bytes_and_json_are_refused_or_answered(data: bytes) -> None:
    for _name, (call, refusals) in TARGETS.items():
        try:
            call(data)
        except refusals:
            pass
