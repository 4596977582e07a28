"""Whether a node accepts a message: :func:`wire.parse` plus time and state.

Whether a message belongs to an interval's set depends only on the message (the *set
rule*, :func:`check_set_rule`): an order, batch or cancel belongs to interval t when it is
for t and its signed ``ts`` is before t's gate; a reading belongs to the first interval
that starts after its end. Three ways in, each applying the set rule:

- gossip (:meth:`Admission.gossip`): besides, our clock must not have passed the
  interval's gate plus the grace period (the gate is its start), timestamps within the
  community's window, nothing already held, a cancel must name an order this node
  holds, a reading must be newer than what the ledger applied;
- fetched from a member while gathering (:meth:`Admission.fetched`): the message must
  belong to the interval it was fetched for, by the set rule, and be signed by a member
  (or a registered meter) like any other, within its member's budget;
- fetched as part of a certified set (:meth:`Admission.certified`): the set rule and the
  signature only, since a majority has decided the set.

Refusals are counted by reason in :attr:`Admission.refusals` and logged; they change
nothing.
"""

from __future__ import annotations

import logging
from bisect import insort
from collections import Counter
from collections.abc import Callable

from wattmesh.exchange.clock import is_late
from wattmesh.exchange.community_file import Community
from wattmesh.exchange.node.message_store import MessageStore
from wattmesh.exchange.node.quorum import VoteBook
from wattmesh.exchange.node.wire import ORDERS, TOPIC_OF_KIND, Inbound, Refused, parse

__all__ = ["Admission", "check_set_rule"]

logger = logging.getLogger(__name__)

_BUDGETED = frozenset({"order", "cancel", "batch"})  # readings and digests have their own rules
_NOT_IN_SETS = frozenset({"interval_vote", "interval_digest"})


def check_set_rule(inbound: Inbound, interval: int) -> None:
    """Refuse (``late``) an order, batch or cancel of ``interval`` whose signed ``ts`` is
    not before the interval's gate. The one home of the rule that makes an interval's set
    depend only on its messages, never on when a node heard them."""
    if inbound.kind in _BUDGETED and is_late(inbound.ts, interval):
        raise Refused("late", f"ts {inbound.ts} is not before interval {interval}'s gate")


class Admission:
    """The checks of one node. ``meter_seq(meter)`` is the last reading seq its ledger
    applied; ``now_ms()`` the community clock."""

    def __init__(
        self,
        community: Community,
        store: MessageStore,
        meter_seq: Callable[[str], int],
        now_ms: Callable[[], int],
    ) -> None:
        self.community = community
        self.votes = VoteBook(m.peer_id for m in community.members)
        self.store = store
        self.meter_seq = meter_seq
        self.now_ms = now_ms
        self.refusals: Counter[str] = Counter()
        self.digests: dict[tuple[int, str], Inbound] = {}  # (interval, node) -> digest
        # (interval, member) -> what it holds of the member's budget, in budget order:
        # [(ts, id, orders, bytes)], a prefix that fits (see `_kept`).
        self.spent: dict[tuple[int, str], list[tuple[int, str, int, int]]] = {}

    def refuse(self, exc: Refused, source: str) -> None:
        """Count and log a refusal."""
        self.refusals[exc.reason] += 1
        n = self.refusals[exc.reason]
        if n <= 20 or n % 1000 == 0:  # a flood must not flood the log too
            logger.info("refused from %s (%s, #%d): %s", source, exc.reason, n, exc.detail)

    def gossip(self, topic: str, data: bytes, parsed: Inbound | None = None) -> Inbound:
        """A message heard on ``topic``: parsed and checked, or :class:`Refused`.
        ``parsed``: what :func:`parse` gave for ``data`` already (the checks that depend
        on time and state are made again)."""
        inbound = parsed if parsed is not None else parse(topic, data, self.community)
        now = self.now_ms()
        c = self.community
        length = c.interval_ms
        if inbound.kind == "interval_vote":
            # No age limit, and forwarded even once we settled its interval: members that
            # are behind still need it (the node holds votes of unsettled intervals only).
            if inbound.interval > now:
                raise Refused("future", f"vote of interval {inbound.interval}, not yet gated")
            if inbound.interval % length or inbound.interval < c.start_ms:
                raise Refused("malformed", f"vote of {inbound.interval}, not an interval")
            if self.votes.held(inbound.record):  # type: ignore[arg-type]
                raise Refused("duplicate", f"a vote of {inbound.interval} from "
                              f"{inbound.signer} held already")  # fmt: skip
            return inbound
        if inbound.kind == "interval_digest":
            if inbound.interval > now:
                raise Refused("future", f"digest of interval {inbound.interval}, not yet gated")
            if (inbound.interval, inbound.signer) in self.digests:
                raise Refused("duplicate", f"a second digest of {inbound.interval} from "
                              f"{inbound.signer}")  # fmt: skip
            return inbound
        if inbound.ts > now + c.max_skew_ms:
            raise Refused("future", f"ts {inbound.ts} is {inbound.ts - now} ms ahead of now "
                          f"(allowed {c.max_skew_ms})")  # fmt: skip
        if inbound.kind != "reading" and inbound.ts < now - c.max_age_ms:
            raise Refused("late", f"ts {inbound.ts} is {now - inbound.ts} ms old "
                          f"(allowed {c.max_age_ms})")  # fmt: skip
        self._check_not_held(inbound)
        interval = self.interval_of(inbound)
        if interval + c.grace_ms <= now:
            # Until gate + grace, when this node gathers and votes, a message the set rule
            # admits (signed before the gate) is still taken from gossip.
            raise Refused("late", f"interval {interval}'s gate plus grace has passed")
        if inbound.kind == "reading":
            last = self.meter_seq(inbound.signer)
            if inbound.record.seq <= last:  # type: ignore[union-attr]
                raise Refused("out-of-order", f"seq {inbound.record.seq} of meter "  # type: ignore[union-attr]
                              f"{inbound.signer[:16]} is not above the applied {last}")  # fmt: skip
            return inbound
        if interval % length:
            raise Refused("malformed", f"interval {interval} is not the start of an interval")
        check_set_rule(inbound, interval)
        if interval > now + c.horizon * length:
            raise Refused("future", f"interval {interval} is more than {c.horizon} intervals "
                          "ahead")  # fmt: skip
        self._kept(inbound, interval)
        return inbound

    def fetched(self, data: bytes, kind: str, interval: int) -> Inbound:
        """A message a peer served for ``interval``: parsed and checked, or Refused
        (``duplicate`` when already held)."""
        inbound = self._belonging(data, kind, interval)
        self._check_not_held(inbound)
        self._kept(inbound, interval)
        return inbound

    def certified(self, data: bytes, kind: str, interval: int) -> Inbound:
        """A message of a set a majority certified for ``interval``: parsed and checked
        by the set rule, or Refused (no budget or duplicate check: the set is decided)."""
        return self._belonging(data, kind, interval)

    def _belonging(self, data: bytes, kind: str, interval: int) -> Inbound:
        inbound = parse(TOPIC_OF_KIND.get(kind, ORDERS), data, self.community)
        if inbound.kind in _NOT_IN_SETS:
            raise Refused("malformed", f"an {inbound.kind} is not part of an interval's set")
        belongs = self.interval_of(inbound)
        if belongs != interval:
            raise Refused("malformed", f"{inbound.kind} {inbound.id[:16]} belongs to interval "
                          f"{belongs}, not {interval}")  # fmt: skip
        check_set_rule(inbound, interval)
        return inbound

    # -- budgets --

    def _kept(self, inbound: Inbound, interval: int) -> list[tuple[int, str, int, int]]:
        """The member's held messages for ``interval`` once ``inbound`` joins them, or
        Refused ``over-budget`` if ``inbound`` would not be among them.

        The rule: sort the member's messages for the interval by (ts, id) and keep the
        longest prefix whose messages, orders and bytes fit its budget. The kept set then
        depends only on the messages held, whatever order they came in, so nodes that
        exchange their sets converge on one (a message refused here can fit again once
        one before it is dropped, and gathering brings it back)."""
        if inbound.kind not in _BUDGETED:
            return []
        c = self.community
        entry = (inbound.ts, inbound.id, len(inbound.orders()), len(inbound.data))
        merged = list(self.spent.get((interval, inbound.signer), ()))
        insort(merged, entry)  # the held list is sorted already
        kept: list[tuple[int, str, int, int]] = []
        orders = size = 0
        for e in merged:
            orders, size = orders + e[2], size + e[3]
            if (len(kept) >= c.max_messages_per_interval or orders > c.max_orders_per_interval
                    or size > c.max_bytes_per_interval):  # fmt: skip
                break
            kept.append(e)
        if entry not in kept:
            raise Refused(
                "over-budget",
                f"{inbound.signer[:16]}'s budget for interval {interval} is spent"
                f" ({c.max_messages_per_interval} messages, {c.max_orders_per_interval}"
                f" orders, {c.max_bytes_per_interval} bytes)",
            )
        return kept

    def keep(self, inbound: Inbound, interval: int) -> bool:
        """Store an admitted message under ``interval`` and spend its member's budget,
        dropping from the store what it pushes out (counted ``over-budget``) and the later
        copies of its orders (counted ``duplicate``, see :meth:`_check_not_held`); False if
        it was held already."""
        later = self._copies(inbound)
        if not self.store.add(inbound, interval):
            return False
        if later:  # after the add: its orders stay held, so their cancels stay too
            self.drop(later, interval)
            self.refusals["duplicate"] += len(later)
        self.spend(inbound, interval)
        return True

    def drop(self, ids: list[str], interval: int) -> None:
        """Drop held messages of ``interval`` from the store and from their members'
        budgets, and with them every held cancel whose order is no longer held (a cancel
        is kept only beside its order, so that nodes converge on one set whichever of
        them heard the order)."""
        dropped = [m for m in map(self.store.held, ids) if m is not None]
        self.store.remove([m.id for m in dropped])
        orphans = [
            cancel
            for m in dropped
            for o in m.orders()
            if self.store.order(o.id) is None
            for cancel in self.store.cancels_of(o.id)
        ]
        self.store.remove(orphans)
        gone = {m.id for m in dropped} | set(orphans)
        for signer in {m.signer for m in dropped}:  # a cancel's signer is its order's
            entries = self.spent.get((interval, signer))
            if entries:
                self.spent[(interval, signer)] = [e for e in entries if e[1] not in gone]

    def spend(self, inbound: Inbound, interval: int) -> None:
        """Count a held message against its member's budget, and drop from the store the
        held messages it pushes out (later in budget order; counted ``over-budget``).
        Refused ``over-budget`` if it does not fit itself."""
        if inbound.kind not in _BUDGETED:
            return
        kept = self._kept(inbound, interval)
        key = (interval, inbound.signer)
        ids = {e[1] for e in kept}
        pushed_out = [e[1] for e in self.spent.get(key, ()) if e[1] not in ids]
        self.spent[key] = kept
        if pushed_out:
            self.drop(pushed_out, interval)
            self.refusals["over-budget"] += len(pushed_out)

    def forget(self, interval: int) -> None:
        """Drop the budgets of a settled interval."""
        for key in [k for k in self.spent if k[0] == interval]:
            del self.spent[key]

    def _check_not_held(self, inbound: Inbound) -> None:
        """Refuse (``duplicate``) a message that is already held, or one that carries an
        order a held message carries too (an order sent alone and inside a batch, or in
        two batches) unless it comes first in (ts, id) order. The first copy stays
        whichever a node heard first, so nodes converge on one set; :meth:`keep` drops
        the later copies."""
        if self.store.has(inbound.id):
            raise Refused("duplicate", f"{inbound.kind} {inbound.id[:16]} is already held")
        held = self.store.carriers_of([o.id for o in inbound.orders()])
        for order_id, copies in held.items():
            for copy in copies:
                if (copy.ts, copy.id) < (inbound.ts, inbound.id):
                    raise Refused("duplicate", f"order {order_id[:16]} is already held, in "
                                  f"{copy.kind} {copy.id[:16]} which comes first")  # fmt: skip

    def _copies(self, inbound: Inbound) -> list[str]:
        """Held messages that carry an order of ``inbound`` (later copies, once
        :meth:`_check_not_held` let it in)."""
        found = {}
        for copies in self.store.carriers_of([o.id for o in inbound.orders()]).values():
            for copy in copies:
                if copy.id != inbound.id:
                    found[copy.id] = None
        return list(found)

    def interval_of(self, inbound: Inbound) -> int:
        """The interval whose settlement uses ``inbound`` (a cancel: its order's)."""
        if inbound.kind != "cancel":
            return inbound.interval  # type: ignore[return-value]
        target = self.store.order(inbound.record.id)  # type: ignore[union-attr]
        if target is None or target[0] != inbound.signer:
            raise Refused("unknown-order", f"cancel of {inbound.record.id[:16]}: no such order "  # type: ignore[union-attr]
                          "of this owner is held")  # fmt: skip
        return target[1]
