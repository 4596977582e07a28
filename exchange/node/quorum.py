"""The votes a node holds for unsettled intervals, and the rule for what it may vote.

One :class:`VoteBook` per node. It keeps every member's signed votes by interval and round,
finds a certificate (a strict majority of members voting one set digest in one round),
records equivocation (one member, one interval, one round, two digests), and decides what
this node may vote next (:meth:`VoteBook.next_vote`).

Why two certificates of one interval need an equivocator (docs/node.md, "Why it is safe"):
a digest Z is *possible* in round r when the votes seen for it there plus the members not
yet seen voting in r could make a majority. A member votes digest Y in round r only if no
digest other than Y is possible in any earlier round. If Z was certified in round r, its
majority Q voted Z there, so every view of round r counts each member of Q as a Z vote or
as unseen, unless one of Q also signed another digest in r (an equivocator): Z stays
possible in r for ever, and no honest member votes anything but Z in a later round. Two
majorities share a member, so a second certificate needs that member to break the rule.
A node's view holds a subset of the votes, which only widens what is possible: the rule
errs on the side of waiting.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from wattmesh.settlement.certificate import MAX_ROUND, Certificate, IntervalVote, majority

__all__ = ["ANY", "Equivocation", "VoteBook"]

ANY = "*"  # stands for "any digest is still possible" (too few votes seen in the round)


@dataclass(frozen=True, slots=True)
class Equivocation:
    """Two signed votes of one member for one interval and round, with different sets."""

    first: IntervalVote
    second: IntervalVote

    def to_dict(self) -> dict:
        return {"interval": self.first.interval, "node": self.first.node,
                "round": self.first.round, "votes": [self.first.to_dict(),
                                                     self.second.to_dict()]}  # fmt: skip


class VoteBook:
    """Votes by interval; ``members`` are the community's (peer ids)."""

    def __init__(self, members: Collection[str]) -> None:
        self.members = frozenset(members)
        self.need = majority(len(self.members))
        # interval -> round -> node -> the votes it signed there (two: it equivocated)
        self._votes: dict[int, dict[int, dict[str, list[IntervalVote]]]] = {}
        self.equivocations: list[Equivocation] = []

    def add(self, vote: IntervalVote) -> str:
        """Hold a verified member's vote: 'new', 'duplicate', or 'equivocation' (a second
        digest in the same round: both are kept as the evidence)."""
        if vote.node not in self.members:
            raise ValueError(f"a vote of {vote.node}, not a member")
        if self.held(vote):  # the same vote, or the evidence is held already
            return "duplicate"
        held = self._votes.setdefault(vote.interval, {}).setdefault(vote.round, {})
        mine = held.setdefault(vote.node, [])
        mine.append(vote)
        if len(mine) == 2:
            self.equivocations.append(Equivocation(mine[0], mine[1]))
            return "equivocation"
        return "new"

    def held(self, vote: IntervalVote) -> bool:
        """Whether adding ``vote`` would change nothing."""
        mine = self._votes.get(vote.interval, {}).get(vote.round, {}).get(vote.node, [])
        return len(mine) >= 2 or any(v.set == vote.set for v in mine)

    def votes(self, interval: int) -> list[IntervalVote]:
        """Every vote held for ``interval``, by round then node."""
        rounds = self._votes.get(interval, {})
        return [v for r in sorted(rounds) for n in sorted(rounds[r]) for v in rounds[r][n]]

    def forget(self, interval: int) -> None:
        """Drop the votes of a settled interval (its certificate is in the ledger)."""
        self._votes.pop(interval, None)

    def _tally(self, interval: int, r: int) -> tuple[dict[str, int], int]:
        """(votes per digest, members not seen voting) in round ``r``."""
        held = self._votes.get(interval, {}).get(r, {})
        counts: dict[str, int] = {}
        for votes in held.values():
            for v in votes:
                counts[v.set] = counts.get(v.set, 0) + 1
        return counts, len(self.members) - len(held)

    def certificate(self, interval: int) -> Certificate | None:
        """A certificate for ``interval`` among the votes held (the lowest round's)."""
        for r in sorted(self._votes.get(interval, {})):
            counts, _unseen = self._tally(interval, r)
            for digest in sorted(counts):
                if counts[digest] >= self.need:
                    held = self._votes[interval][r]
                    return Certificate.of(
                        v for votes in held.values() for v in votes if v.set == digest
                    )
        return None

    def possible(self, interval: int, r: int) -> set[str] | str:
        """The digests that could still be certified in round ``r``: a set, or :data:`ANY`
        when so few members have been seen voting there that any digest could."""
        counts, unseen = self._tally(interval, r)
        if unseen >= self.need:
            return ANY
        return {d for d, n in counts.items() if n + unseen >= self.need}

    def rounds(self, interval: int) -> list[int]:
        return sorted(self._votes.get(interval, {}))

    def voted(self, interval: int, node: str) -> dict[int, str]:
        """round -> the digest ``node`` voted there (its first, if it equivocated)."""
        return {r: held[node][0].set for r, held in self._votes.get(interval, {}).items()
                if node in held}  # fmt: skip

    def voters(self, interval: int, digest: str) -> list[str]:
        """The members that voted ``digest`` for ``interval`` in any round."""
        return sorted({v.node for v in self.votes(interval) if v.set == digest})

    def leading(self, interval: int, r: int, skip: Collection[str] = ()) -> str | None:
        """The digest with the most votes in round ``r`` (ties: the smaller), ``skip``
        left out; None when no vote is held there."""
        counts, _unseen = self._tally(interval, r)
        best = sorted((-n, d) for d, n in counts.items() if d not in skip)
        return best[0][1] if best else None

    def next_vote(
        self,
        interval: int,
        node: str,
        ours: str,
        advance: bool,
        unavailable: Collection[str] = (),
    ) -> tuple[int, str] | None:
        """(round, digest) that ``node`` may vote now, or None.

        Rounds are reached in order: round r + 1 counts as reached once a majority has
        voted in round r (so a vote far ahead, or one member's early vote in the next
        round, pulls nobody along). ``node`` votes in the lowest reached round it has not
        voted in where the rule allows a vote; when it has voted in every reached round,
        in the next one, if ``advance`` says its round timed out, a majority voted in the
        latest and the round is below :data:`MAX_ROUND`. The digest is the one digest
        still possible in the earlier rounds. When none is, the vote is free: in round 0
        ``ours`` (the node's own set); later the digest with the most votes in the round
        before, so free votes converge on one set instead of each node's own, unless it
        is ``unavailable`` to this node (it could not fetch that set), then ``ours``.
        """
        held = self._votes.get(interval, {})
        latest = 0
        while len(held.get(latest, {})) >= self.need and latest + 1 in held:
            latest += 1
        mine = self.voted(interval, node)
        last = latest
        if latest in mine and advance and len(held.get(latest, {})) >= self.need:
            last = latest + 1  # every reached round voted in: a new one may help
        allowed: set[str] = set()
        for r in range(min(last, MAX_ROUND) + 1):
            if r not in mine and len(allowed) <= 1:
                if allowed:
                    return r, next(iter(allowed))
                lead = self.leading(interval, r - 1, unavailable) if r else None
                return r, lead or ours
            p = self.possible(interval, r)
            if p == ANY:
                return None
            allowed |= p  # type: ignore[arg-type]
        return None
