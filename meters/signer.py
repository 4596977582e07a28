"""Number and sign measurements with a meter's key: the last step of every source."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from wattmesh.settlement.keys import Ed25519PrivateKey, peer_id_of
from wattmesh.settlement.records import Reading

from .measurement import Measurement

__all__ = ["sign_measurements"]


def sign_measurements(
    measurements: Iterable[Measurement], key: Ed25519PrivateKey, first_seq: int = 1
) -> Iterator[Reading]:
    """Yield one signed :class:`Reading` per measurement, ``seq`` counting from ``first_seq``.

    The meter id is the key's peer id. A measurement that does not make a valid reading
    (``end`` not after ``start``, a negative value) raises
    :class:`~wattmesh.settlement.records.RecordError` naming the field.
    """
    meter = peer_id_of(key)
    for seq, m in enumerate(measurements, first_seq):
        yield Reading(meter, m.start, m.end, m.produced, m.consumed, seq).signed(key)
