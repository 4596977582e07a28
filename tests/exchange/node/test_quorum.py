"""The vote book and the quorum rule (exchange/node/quorum.py, docs/node.md "Certificates").

The rule, as docs/node.md states it: a certificate is a strict majority of members voting
one set digest in one round; a digest is *possible* in a round while its votes there plus
the members not seen voting there reach a majority; a member votes digest Y in a round only
when no digest but Y is possible in any earlier round (its own set when none is).
"""

from __future__ import annotations

import random

import pytest

from wattmesh.exchange.node.quorum import ANY, VoteBook
from wattmesh.settlement.certificate import (
    MAX_ROUND,
    Certificate,
    IntervalVote,
    check_certificate,
    majority,
)
from wattmesh.settlement.keys import generate_key, peer_id_of

T = 900_000
A, B, C = ("a" * 64, "b" * 64, "c" * 64)


def vote(node: str, round_: int, digest: str, interval: int = T) -> IntervalVote:
    return IntervalVote(node, interval, round_, digest, 1)


def book_of(n: int) -> tuple[VoteBook, list[str]]:
    members = [f"m{i}" for i in range(n)]
    return VoteBook(members), members


def test_majority_is_strict():
    assert [majority(n) for n in (1, 2, 3, 4, 5, 12)] == [1, 2, 2, 3, 3, 7]


def test_a_majority_for_one_digest_in_one_round_is_a_certificate():
    book, m = book_of(4)
    book.add(vote(m[0], 0, A))
    book.add(vote(m[1], 0, A))
    book.add(vote(m[2], 1, A))  # another round: does not count with round 0
    assert book.certificate(T) is None
    book.add(vote(m[2], 0, A))
    cert = book.certificate(T)
    assert cert is not None and (cert.round, cert.set) == (0, A)
    assert [v.node for v in cert.votes] == m[:3]


def test_a_second_digest_in_a_round_is_equivocation_and_both_votes_are_kept():
    book, m = book_of(3)
    assert book.add(vote(m[0], 0, A)) == "new"
    assert book.add(vote(m[0], 0, A)) == "duplicate"
    assert book.add(vote(m[0], 0, B)) == "equivocation"
    assert book.add(vote(m[0], 0, C)) == "duplicate"  # the evidence is held already
    (ev,) = book.equivocations
    assert (ev.first.set, ev.second.set) == (A, B)
    assert book.add(vote(m[0], 1, B)) == "new"  # another round is not equivocation
    with pytest.raises(ValueError):
        book.add(vote("stranger", 0, A))


def test_possible_digests_follow_the_documented_count():
    book, m = book_of(5)  # a majority is 3
    assert book.possible(T, 0) == ANY  # 5 unseen
    book.add(vote(m[0], 0, A))
    book.add(vote(m[1], 0, A))
    assert book.possible(T, 0) == ANY  # 3 unseen could still make any digest
    book.add(vote(m[2], 0, B))
    assert book.possible(T, 0) == {A, B}  # A: 2 + 2 unseen; B: 1 + 2
    book.add(vote(m[3], 0, B))
    assert book.possible(T, 0) == {A, B}  # 2 + 1 each
    book.add(vote(m[4], 0, C))
    assert book.possible(T, 0) == set()  # all seen, none has 3


def test_a_first_vote_is_for_the_own_set():
    book, m = book_of(4)
    assert book.next_vote(T, m[0], A, advance=False) == (0, A)
    book.add(vote(m[0], 0, A))
    assert book.next_vote(T, m[0], B, advance=False) is None  # voted in the latest round


def test_a_split_round_moves_on_only_to_the_one_digest_still_possible():
    book, m = book_of(4)  # one member offline; A, A, B among the other three
    for node, d in ((m[0], A), (m[1], A), (m[2], B)):
        book.add(vote(node, 0, d))
    assert book.possible(T, 0) == {A}  # B: 1 + 1 < 3
    assert book.next_vote(T, m[2], B, advance=True) == (1, A)  # B's voter comes over to A
    assert book.next_vote(T, m[0], C, advance=True) == (1, A)  # A's voters stay with A
    assert book.next_vote(T, m[3], C, advance=False) == (0, C)  # round 0 is free
    book.add(vote(m[0], 1, A))
    # A late member votes in the lowest round it has not voted in: round 0, its own set.
    assert book.next_vote(T, m[3], C, advance=False) == (0, C)


def test_a_hostile_member_voting_ahead_cannot_stop_the_others_voting():
    """One member's votes in rounds 0 and 1 right after the gate: round 1 is not reached
    (no majority voted in round 0), so the others still vote in round 0."""
    book, m = book_of(4)
    hostile = m[3]
    book.add(vote(hostile, 0, B))
    book.add(vote(hostile, 1, B))
    book.add(vote(m[0], 0, A))
    assert book.possible(T, 0) == {A, B}
    assert book.next_vote(T, m[1], A, advance=False) == (0, A)
    book.add(vote(m[1], 0, A))
    assert book.next_vote(T, m[2], A, advance=False) == (0, A)
    book.add(vote(m[2], 0, A))
    assert book.certificate(T).set == A


def test_rounds_stop_at_the_largest_a_vote_may_carry():
    book, m = book_of(2)
    for r in range(MAX_ROUND + 1):
        book.add(vote(m[0], r, A))
        book.add(vote(m[1], r, B))
    assert book.next_vote(T, m[0], A, advance=True) is None


def test_with_two_digests_possible_nobody_moves_on():
    book, m = book_of(5)
    for node, d in ((m[0], A), (m[1], A), (m[2], B), (m[3], B)):
        book.add(vote(node, 0, d))
    assert book.next_vote(T, m[0], A, advance=True) is None
    book.add(vote(m[4], 0, C))  # the fifth member shows up: nothing can be certified
    # Free: the round's leading set (A and B tie at 2: the smaller digest), so the free
    # votes converge; unless this node cannot fetch it: then its own.
    assert book.next_vote(T, m[0], C, advance=True) == (1, A)
    assert book.next_vote(T, m[0], C, advance=True, unavailable={A}) == (1, B)
    assert book.next_vote(T, m[0], C, advance=True, unavailable={A, B, C}) == (1, C)


def test_a_vote_far_ahead_does_not_pull_the_others_past_an_unfinished_round():
    book, m = book_of(4)
    book.add(vote(m[0], 0, A))
    book.add(vote(m[3], 500, B))  # an equivocator's or a liar's jump ahead
    assert book.next_vote(T, m[1], A, advance=False) == (0, A)


def test_random_views_never_certify_two_sets_without_an_equivocator():
    """Honest members voting by the rule from random partial views of the votes, with
    their own sets changing as they gather, never make two certificates with different
    sets; 400 runs, each 60 steps."""
    rng = random.Random(13)
    for _run in range(400):
        n = rng.randint(2, 7)
        members = [f"m{i}" for i in range(n)]
        need = majority(n)
        cast: list[IntervalVote] = []
        ours = {node: rng.choice((A, B, C)) for node in members}
        for _step in range(60):
            node = rng.choice(members)
            if rng.random() < 0.2:
                ours[node] = rng.choice((A, B, C))  # it gathered more
            book = VoteBook(members)
            for v in cast:
                if v.node == node or rng.random() < 0.6:
                    book.add(v)
            choice = book.next_vote(T, node, ours[node], advance=rng.random() < 0.5)
            if choice is not None:
                cast.append(vote(node, *choice))
        tallies: dict[tuple[int, str], set[str]] = {}
        for v in cast:
            tallies.setdefault((v.round, v.set), set()).add(v.node)
        certified = {d for (_r, d), voters in tallies.items() if len(voters) >= need}
        assert len(certified) <= 1, (n, cast)
        rounds_of = {}
        for v in cast:
            assert rounds_of.setdefault((v.node, v.round), v.set) == v.set  # no equivocation


def test_members_that_see_every_vote_reach_a_certificate():
    """Liveness with full views: members with different sets, all online, certify one set
    within a few rounds."""
    rng = random.Random(5)
    for _run in range(100):
        n = rng.randint(2, 9)
        members = [f"m{i}" for i in range(n)]
        book = VoteBook(members)
        ours = {node: rng.choice((A, B, C)) for node in members}
        for _step in range(20 * n):
            if book.certificate(T) is not None:
                break
            node = rng.choice(members)
            choice = book.next_vote(T, node, ours[node], advance=True)
            if choice is not None:
                book.add(vote(node, *choice))
            ours[node] = A  # gathering converges: everyone ends with the union
        assert book.certificate(T) is not None, n


def test_a_certificate_checks_signatures_membership_and_majority():
    keys = [generate_key() for _ in range(4)]
    ids = [peer_id_of(k) for k in keys]
    votes = [IntervalVote(i, T, 0, A, 5).signed(k) for i, k in zip(ids, keys, strict=True)]
    assert check_certificate(Certificate.of(votes[:3]), T, A, ids) is None
    assert "needs 3" in check_certificate(Certificate.of(votes[:2]), T, A, ids)
    assert "not a member" in check_certificate(Certificate.of(votes[1:]), T, A, ids[:3] + ["x"])
    assert "interval" in check_certificate(Certificate.of(votes[:3]), 2 * T, A, ids)
    assert "set" in check_certificate(Certificate.of(votes[:3]), T, B, ids)
    forged = IntervalVote(ids[3], T, 0, A, 5, votes[0].sig)
    problem = check_certificate(Certificate.of([*votes[:2], forged]), T, A, ids)
    assert "not signed" in problem
    twice = Certificate.of([votes[0], votes[0], votes[1]])
    assert "two votes of one node" in check_certificate(twice, T, A, ids)
    round_trip = Certificate.from_dict(Certificate.of(votes).to_dict())
    assert check_certificate(round_trip, T, A, ids) is None
