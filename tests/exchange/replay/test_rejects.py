"""A replay's refused lines as columns (exchange/replay/rejects.py): rows read back as they
were refused, the scanner's compact rows worded as the Python path words them, and counts
made without a row."""

from __future__ import annotations

from array import array
from collections import Counter

import pytest

from wattmesh.exchange.replay import replay as replay_module
from wattmesh.exchange.replay.rejects import (
    GIVEN,
    LATE_CANCEL,
    NOT_LIVE_ID,
    Reject,
    Rejects,
    as_rejects,
)

L = 900_000
T0 = 1_718_928_000_000
ROWS = [
    Reject(2, "bad-json", "not JSON: unexpected character", "{oops"),
    Reject(5, "late", "cancel at ts 3 is at or after the gate of interval 2", '{"x":1}'),
    Reject(9, "bad-json", "not JSON: empty", "\x00"),
]


def test_rows_given_in_full_read_back_as_given():
    rejects = as_rejects(ROWS)
    assert len(rejects) == 3
    assert rejects[0] == ROWS[0] and rejects[-1] == ROWS[-1]
    assert rejects[1:] == ROWS[1:] and rejects[::-1] == ROWS[::-1]
    assert list(rejects) == ROWS and rejects == ROWS and rejects == as_rejects(ROWS)
    assert rejects != ROWS[:2] and rejects != [*ROWS[:2], ROWS[0]]
    assert rejects.counts() == {"bad-json": 2, "late": 1}
    assert Rejects() == [] and Rejects().counts() == {}
    with pytest.raises(IndexError):
        rejects[3]


def test_a_code_outside_the_replay_table_is_refused_and_adds_nothing():
    rejects = as_rejects(ROWS)
    with pytest.raises(ValueError, match="'malformed' is not a replay refusal code"):
        rejects.add(10, "malformed", "gossip's code, not replay's", "{}")
    assert rejects == ROWS and len(rejects.forms) == len(rejects.numbers) // 3 == 3


def late_cancels_log(order_log, n: int) -> list:
    """``n`` orders of alice's for T0, each cancelled after the gate (late in call mode)
    and again, so that in cda mode the second cancel of each finds its order gone."""
    orders = [order_log.order("alice", "bid", 100_000 + k, 5, T0 - L + k, T0) for k in range(n)]
    late = [order_log.cancel(o["id"], "alice", T0 + k) for k, o in enumerate(orders)]
    again = [order_log.cancel(o["id"], "alice", T0 + n + k) for k, o in enumerate(orders)]
    return [order_log.account("alice", 0, 10**9, None), *orders, *late, *again]


@pytest.mark.parametrize(("mode", "code", "form"), [("call", "late", LATE_CANCEL),
                                                    ("cda", "not-live", NOT_LIVE_ID)])  # fmt: skip
def test_the_scanner_adds_compact_rows_worded_as_the_python_path_words_them(
    order_log, monkeypatch, mode, code, form
):
    """The scanner's refusals (late call cancels; cda cancels of orders gone) are kept as
    numbers and bytes, not rows, and read back exactly as the Python path's rows."""
    lines = late_cancels_log(order_log, 40)
    fast = order_log.replay(*lines, mode=mode)
    monkeypatch.setattr(replay_module, "_FAST_SCAN", False)
    slow = order_log.replay(*lines, mode=mode)
    assert len(slow.rejects) >= 39 and set(slow.rejects.forms) == {GIVEN}
    # All but the log's first cancel (which takes the Python path) are compact rows.
    assert fast.rejects.forms.count(form) >= len(slow.rejects) - 1
    assert list(fast.rejects) == list(slow.rejects)
    assert [fast.rejects[k] for k in range(len(slow.rejects))] == list(slow.rejects)
    assert (
        fast.rejects.counts()
        == dict(Counter(r.code for r in slow.rejects))
        == {code: len(slow.rejects)}
    )


class NarrowLines(Rejects):
    """Rejects whose line numbers are 32-bit: not the type the scanner writes."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.lines = array("i")


@pytest.mark.parametrize("mode", ["call", "cda"])
def test_the_scanner_refuses_columns_of_another_type(order_log, monkeypatch, mode):
    """_logscan writes rows straight into the columns' memory: columns of another type
    than rejects.py documents are refused with a clear error, not written over."""
    monkeypatch.setattr(replay_module, "Rejects", NarrowLines)
    with pytest.raises(ValueError, match="rejects: columns of the wrong type or length"):
        order_log.replay(*late_cancels_log(order_log, 3), mode=mode)


class ExportedText(Rejects):
    """Rejects whose text column is exported (a memoryview holds it): it cannot grow."""

    made: list[ExportedText] = []

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.view = memoryview(self.text)
        ExportedText.made.append(self)


@pytest.mark.parametrize("mode", ["call", "cda"])
def test_rows_that_cannot_be_added_leave_the_columns_as_they_were(order_log, monkeypatch, mode):
    """When the scanner cannot make room for its rows, the error is raised and every
    column keeps its length: no row half-written, none made of uninitialised memory."""
    monkeypatch.setattr(replay_module, "Rejects", ExportedText)
    ExportedText.made.clear()
    with pytest.raises(BufferError):
        order_log.replay(*late_cancels_log(order_log, 3), mode=mode)
    (rejects,) = ExportedText.made
    n = len(rejects.lines)
    assert len(rejects.codes) == len(rejects.forms) == len(rejects.text_ends) == n
    assert len(rejects.numbers) == 3 * n and set(rejects.forms) <= {GIVEN}
    assert len(list(rejects)) == n  # every row reads back
