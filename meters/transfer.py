"""MaxCoin's check of a transfer between two meters: sent minus received against losses.

A transfer of energy to or from a storage node carries the sender's and the receiver's
readings for the same interval: what the sender's meter measured going out (``produced``)
and what the receiver's measured coming in (``consumed``). With a configured line loss
factor, ``received`` should be ``sent × (1 − loss)``. If the difference is off by more than
a tolerance, either a meter is wrong or energy is being counted twice, so the transfer is
flagged for a human to look at (it is not refused: both readings are valid on their own).

All integers: loss in parts per million of what was sent, tolerance in Wh.
"""

from __future__ import annotations

from dataclasses import dataclass

from wattmesh.settlement.records import Reading

__all__ = ["TransferCheck", "check_transfer"]


@dataclass(frozen=True, slots=True)
class TransferCheck:
    """The outcome: the energies, the loss expected and seen, and why it is flagged ('' if
    it is not)."""

    sent_wh: int
    received_wh: int
    expected_loss_wh: int  # floor(sent * loss_ppm / 1e6)
    loss_wh: int  # sent - received (negative: more arrived than left)
    problem: str

    @property
    def flagged(self) -> bool:
        return bool(self.problem)


def check_transfer(
    sender: Reading, receiver: Reading, loss_ppm: int, tolerance_wh: int
) -> TransferCheck:
    """Compare the sender's ``produced`` with the receiver's ``consumed`` over one interval.

    Flagged when the readings cover different intervals, or when
    ``|(sent − received) − sent × loss_ppm / 10**6| > tolerance_wh`` (exact, in integers).
    """
    if not 0 <= loss_ppm <= 1_000_000:
        raise ValueError(f"loss_ppm: must be in 0..1000000, got {loss_ppm}")
    if tolerance_wh < 0:
        raise ValueError(f"tolerance_wh: must be >= 0, got {tolerance_wh}")
    sent, received = sender.produced, receiver.consumed
    loss = sent - received
    expected = sent * loss_ppm // 1_000_000
    problem = ""
    if (sender.start, sender.end) != (receiver.start, receiver.end):
        problem = (
            f"the readings cover different intervals: [{sender.start}, {sender.end}) and "
            f"[{receiver.start}, {receiver.end})"
        )
    elif abs(loss * 1_000_000 - sent * loss_ppm) > tolerance_wh * 1_000_000:
        problem = (
            f"sent {sent} Wh, received {received} Wh: a loss of {loss} Wh where "
            f"{expected} Wh ({loss_ppm} ppm) ± {tolerance_wh} Wh was expected"
        )
    return TransferCheck(sent, received, expected, loss, problem)
