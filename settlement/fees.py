"""Energo's storage commission: charged every interval on stored energy, then split.

The Energo whitepaper: "a commission fee on the user stored energy in the distributed
energy storage equipment is charged every 15 minutes"; 80% goes to the storage equipment
owners in proportion to what they contribute, 10% to educating the market and new users,
10% to the Energo network.

Units, all integers:

- ``rate`` is nano-currency per kWh stored per interval. An account holding ``E`` Wh at the
  close of an interval pays ``E * rate // 1000`` (floor: a household is never charged for
  a fraction of a nano; the fraction is simply not charged, nothing is created).
- Provider weights are storage capacities in Wh (any common unit works: only ratios count).

The split is largest-remainder (Hamilton) apportionment over *all* recipients at once, so
every recipient, funds included, gets within 1 nano of its exact share and the parts add up
to the total exactly. Ties for a leftover nano go to the smaller account id (plain ``str``
order), so every node computes the same split.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "EDUCATION_PERCENT",
    "NETWORK_PERCENT",
    "PROVIDERS_PERCENT",
    "apportion",
    "split_fees",
    "storage_fee",
    "storage_fees",
]

PROVIDERS_PERCENT = 80
EDUCATION_PERCENT = 10
NETWORK_PERCENT = 10
assert PROVIDERS_PERCENT + EDUCATION_PERCENT + NETWORK_PERCENT == 100


def _check_int(value: object, field: str, minimum: int = 0) -> int:
    # bool is an int subclass; a True fee or capacity is a bug, not a 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field}: need an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{field}: need at least {minimum}, got {value}")
    return value


def _check_account(account: object, field: str) -> str:
    if not isinstance(account, str) or not account:
        raise ValueError(f"{field}: need a non-empty account id, got {account!r}")
    return account


def storage_fee(stored_wh: int, rate: int) -> int:
    """Fee in nano-currency for ``stored_wh`` Wh over one interval at ``rate`` nano/kWh."""
    _check_int(stored_wh, "stored_wh")
    _check_int(rate, "rate")
    return stored_wh * rate // 1000


def storage_fees(balances: Mapping[str, int], rate: int) -> dict[str, int]:
    """Each account's storage fee for one interval; accounts owing 0 are left out.

    ``balances`` are energy balances in Wh at the interval's close.
    """
    _check_int(rate, "rate")
    out: dict[str, int] = {}
    for account, wh in balances.items():
        _check_account(account, "balances")
        fee = storage_fee(_check_int(wh, f"balances[{account!r}]"), rate)
        if fee:
            out[account] = fee
    return out


def apportion(total: int, weights: Mapping[str, int]) -> dict[str, int]:
    """Split ``total`` by integer ``weights`` with Hamilton's largest-remainder method.

    Each account first gets ``floor(total * w / W)``; the few nano left over (fewer than
    the number of accounts) go one each to the largest remainders, ties to the smaller id.
    Accounts getting 0 are left out. Needs a positive total weight.
    """
    _check_int(total, "total")
    denom = 0
    for account, w in weights.items():
        _check_account(account, "weights")
        denom += _check_int(w, f"weights[{account!r}]")
    if denom == 0:
        raise ValueError("weights: need a positive total weight")
    shares: dict[str, int] = {}
    remainders: list[tuple[int, str]] = []
    for account, w in weights.items():
        q, r = divmod(total * w, denom)
        shares[account] = q
        remainders.append((-r, account))
    left = total - sum(shares.values())
    # left < len(weights), and only accounts with a positive remainder can be reached
    # (the remainders sum to left * denom, each below denom).
    for _, account in sorted(remainders)[:left]:
        shares[account] += 1
    return {a: s for a, s in shares.items() if s}


def split_fees(
    total: int, providers: Mapping[str, int], education: str, network: str
) -> dict[str, int]:
    """Split collected fees: 80% to providers pro rata to capacity, 10% and 10% to funds.

    One apportionment over all recipients, with ``C`` the total capacity: each fund weighs
    ``10 * C`` and a provider ``80 * capacity`` (``100 * C`` in all). An
    account in two roles (say the network fund also owns storage) has its weights added,
    so it is rounded once. Returns account -> nano; zero shares are left out; the values
    always add up to ``total``.
    """
    _check_int(total, "total")
    _check_account(education, "education")
    _check_account(network, "network")
    capacity = 0
    for account, cap in providers.items():
        _check_account(account, "providers")
        capacity += _check_int(cap, f"providers[{account!r}]")
    if capacity == 0:
        # The 80% has nowhere to go; refusing beats silently paying it to the funds.
        raise ValueError("providers: need at least one provider with positive capacity")
    weights: dict[str, int] = {}
    for account, cap in providers.items():
        weights[account] = weights.get(account, 0) + PROVIDERS_PERCENT * cap
    weights[education] = weights.get(education, 0) + EDUCATION_PERCENT * capacity
    weights[network] = weights.get(network, 0) + NETWORK_PERCENT * capacity
    return apportion(total, weights)
