"""Validation and the fold: every entry kind's rules, turning entries into postings and
balances. One code path for append and verify."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ..fees import split_fees, storage_fee
from ..keys import verify as verify_sig
from ..readings import apply_reading, order_problem, power_problem
from .schema import (
    BANK,
    EXTERNAL,
    GRID,
    I64,
    KEYSETS,
    KINDS,
    MAX_NAME,
    METERS,
    OPTSETS,
    ZERO_HASH,
    LedgerError,
    hex64_field,
    int_field,
    name_field,
    show_value,
    signed_int_field,
)

# ---------------------------------------------------------------------------------------
# Validation and the fold. One code path for append and verify.


@dataclass(slots=True)
class LedgerState:
    """The fold of a ledger prefix. Values are immutable so ``copy`` is a shallow copy."""

    seq: int = 0
    head: bytes = ZERO_HASH
    ts: int = 0
    genesis: dict[str, Any] | None = None
    bal: dict[str, tuple[int, int]] = field(default_factory=dict)
    members: dict[str, tuple[int, bool]] = field(default_factory=dict)
    funds: dict[str, str] = field(default_factory=dict)  # fund name -> account
    # meter -> (owner, seq of its last applied reading, end of that reading in ms,
    # declared max power in W or None)
    meters: dict[str, tuple[str, int, int, int | None]] = field(default_factory=dict)
    last_close: int = 0  # seq of the last interval_close (0: none)
    last_interval: int = -1  # interval of the last interval_close (-1: none)
    first_trade: int = 0  # seq of the first trade (0: none yet); openings must precede it
    storage_interval: int = -1  # the last interval whose storage fees were charged
    # Obligations inside one batch (never left open by a committed batch):
    # a reading's grid entry still to come: (kind, owner, qty, reading seq)
    pending: tuple[str, str, int, int] | None = None
    # storage fees being charged: [interval, {owner: amount}, total, last owner]
    storage_group: list[Any] | None = None

    def copy(self) -> LedgerState:
        return LedgerState(
            self.seq,
            self.head,
            self.ts,
            self.genesis,
            dict(self.bal),
            dict(self.members),
            dict(self.funds),
            dict(self.meters),
            self.last_close,
            self.last_interval,
            self.first_trade,
            self.storage_interval,
            self.pending,
            None
            if self.storage_group is None
            else [*self.storage_group[:1], dict(self.storage_group[1]), *self.storage_group[2:]],
        )

    def open_obligation(self) -> str:
        """What an entry still owes at the end of a batch ('' if nothing)."""
        if self.pending is not None:
            kind, owner, qty, rseq = self.pending
            return f"reading {rseq} must be followed by its {kind} of {qty} Wh for {owner}"
        if self.storage_group is not None:
            return f"the storage fees of interval {self.storage_group[0]} need their fee_split"
        return ""

    def kind_of(self, account: str) -> str:
        if account in self.members:
            return "member"
        if account in EXTERNAL:
            return "external"
        return "fund"

    # -- the fold --

    def apply(self, seq: int, ts: int, kind: str, body: Any, check_sig: bool = True) -> None:
        """Validate one entry against this state and apply it, or raise LedgerError."""
        keys = KEYSETS.get(kind) if type(kind) is str else None
        if keys is None:
            raise LedgerError(f"unknown kind {show_value(kind)}; kinds: {', '.join(KINDS)}")
        if type(body) is not dict:
            raise LedgerError(f"body must be a JSON object, got {type(body).__name__}", None, kind)
        if body.keys() != keys:
            missing = sorted(keys.difference(body))
            if missing:
                raise LedgerError("missing", missing[0], kind)
            extra = set(body).difference(keys).difference(OPTSETS.get(kind, ()))
            if extra:
                raise LedgerError("unknown field", sorted(extra)[0], kind)
        if type(ts) is not int or not 0 <= ts <= I64:
            raise LedgerError(
                f"ts must be non-negative integer ms, got {show_value(ts)}", None, kind
            )
        if ts < self.ts:
            raise LedgerError(f"ts {ts} is before the previous entry's ts {self.ts}", None, kind)
        if seq == 1:
            if kind != "genesis":
                raise LedgerError("the first entry must be genesis", None, kind)
        elif kind == "genesis":
            raise LedgerError("genesis may only be the first entry", None, kind)
        if self.pending is not None and (
            kind != self.pending[0] or body.get("reading") != self.pending[3]
        ):
            raise LedgerError(self.open_obligation() + " (with 'reading' its seq)", None, kind)
        if self.storage_group is not None and kind not in ("fee", "fee_split"):
            raise LedgerError(self.open_obligation() + " before any other entry", None, kind)
        r = _HANDLERS[kind](self, body, seq)
        if r is not None:
            if type(r) is tuple:  # a move between two accounts: x += (de, dm), y -= (de, dm)
                x, y, de, dm = r
                bal = self.bal
                bx = bal[x]
                by = bal[y]
                ex = bx[0] + de
                mx = bx[1] + dm
                ey = by[0] - de
                my = by[1] - dm
                if (ex < 0 or mx < 0) and x not in EXTERNAL:
                    _negative(x, bx, de, dm, kind)
                if (ey < 0 or my < 0) and y not in EXTERNAL:
                    _negative(y, by, -de, -dm, kind)
                if de > 0 and x in self.members and ex > self.members[x][0]:
                    _over_bmax(x, ex, self.members[x][0], kind)
                if de < 0 and y in self.members and ey > self.members[y][0]:
                    _over_bmax(y, ey, self.members[y][0], kind)
                if not (
                    -I64 <= ex <= I64
                    and -I64 <= mx <= I64
                    and -I64 <= ey <= I64
                    and -I64 <= my <= I64
                ):
                    _overflow(kind)
                bal[x] = (ex, mx)
                bal[y] = (ey, my)
            else:
                self._post(r, kind)
        self.seq = seq
        self.ts = ts
        if check_sig:
            if kind == "reading":
                self._check_reading_sig(body)
            elif kind == "correction":
                self._check_correction_sig(body)

    def _post(self, postings: Sequence[tuple[str, int, int]], kind: str) -> None:
        bal = self.bal
        net: dict[str, list[int]] = {}
        se = sm = 0
        for acct, de, dm in postings:
            se += de
            sm += dm
            cur = net.get(acct)
            if cur is None:
                net[acct] = [de, dm]
            else:
                cur[0] += de
                cur[1] += dm
        if se or sm:  # cannot happen for well-formed kinds; guards conservation
            raise LedgerError(f"postings do not sum to zero (energy {se}, money {sm})", None, kind)
        new = {}
        for acct, (de, dm) in net.items():
            cur = bal.get(acct)
            if cur is None:
                raise LedgerError(f"account {acct!r} does not exist", None, kind)
            e, m = cur[0] + de, cur[1] + dm
            if (e < 0 or m < 0) and acct not in EXTERNAL:
                _negative(acct, cur, de, dm, kind)
            if de > 0 and acct in self.members and e > self.members[acct][0]:
                _over_bmax(acct, e, self.members[acct][0], kind)
            if not (-I64 <= e <= I64 and -I64 <= m <= I64):
                _overflow(kind)
            new[acct] = (e, m)
        bal.update(new)

    def _member_acct(self, body: dict, f: str, kind: str) -> str:
        who = name_field(body, f, kind)
        if who not in self.members:
            raise LedgerError(f"{who!r} is not a member", f, kind)
        return who

    def _genesis(self, b: dict, seq: int) -> None:
        k = "genesis"
        name_field(b, "community", k)
        int_field(b, "interval_ms", k, 1)
        lo = int_field(b, "price_min", k)
        hi = int_field(b, "price_max", k)
        if hi < lo:
            raise LedgerError(f"must be >= price_min {lo}, got {hi}", "price_max", k)
        if int_field(b, "fee_rate_ppm", k) > 1_000_000:
            raise LedgerError("must be at most 1000000 (100%)", "fee_rate_ppm", k)
        int_field(b, "retail_price", k)
        int_field(b, "feedin_price", k)
        if "storage_rate" in b:  # one spelling per genesis: a rate of 0 is written by omission
            int_field(b, "storage_rate", k, 1)
        funds = b["funds"]
        if type(funds) is not dict or "fees" not in funds:
            raise LedgerError("must be an object naming at least the 'fees' account", "funds", k)
        for name, acct in funds.items():
            if type(acct) is not str or not 0 < len(acct) <= MAX_NAME or acct.startswith("@"):
                raise LedgerError(f"fund {name!r}: bad account name {show_value(acct)}", "funds", k)
        if len(set(funds.values())) != len(funds):
            raise LedgerError("two funds share one account", "funds", k)
        if "auditors" in b:
            aud = b["auditors"]
            if type(aud) is not list or not aud or len(set(map(str, aud))) != len(aud):
                raise LedgerError("must be a non-empty list of distinct peer ids", "auditors", k)
            for a in aud:
                if type(a) is not str or not 0 < len(a) <= MAX_NAME:
                    raise LedgerError(f"{show_value(a)} is not a peer id", "auditors", k)
        if b.get("storage_rate") and not {"education", "network"} <= funds.keys():
            raise LedgerError(
                "a storage_rate needs 'education' and 'network' funds (10% of the storage "
                "fees each)",
                "funds",
                k,
            )
        self.genesis = b
        self.funds = dict(funds)
        for acct in EXTERNAL:
            self.bal[acct] = (0, 0)
        for acct in funds.values():
            self.bal[acct] = (0, 0)

    def _member(self, b: dict, seq: int) -> None:
        k = "member"
        who = name_field(b, "owner", k)
        if who.startswith("@"):
            raise LedgerError("must not start with '@' (external accounts)", "owner", k)
        if who in self.bal:
            raise LedgerError(f"account {who!r} already exists", "owner", k)
        bmax = int_field(b, "bmax", k)
        if type(b["storage"]) is not bool:
            raise LedgerError(
                f"must be true or false, got {show_value(b['storage'])}", "storage", k
            )
        self.members[who] = (bmax, b["storage"])
        self.bal[who] = (0, 0)

    def _meter(self, b: dict, seq: int) -> None:
        k = "meter"
        m = name_field(b, "meter", k)
        if m in self.meters:
            raise LedgerError(f"meter {m!r} is already registered", "meter", k)
        owner = self._member_acct(b, "owner", k)
        max_w = int_field(b, "max_power_w", k, 1) if "max_power_w" in b else None
        self.meters[m] = (owner, 0, 0, max_w)

    def _reading(self, b: dict, seq: int) -> Any:
        """A signed meter reading, applied as docs/design.md says (settlement/readings.py): the
        net moves the owner's energy within [0, Bmax]; what is above Bmax must be the next
        entry's grid_export, what the balance cannot cover the next entry's grid_import."""
        k = "reading"
        if b["type"] != "reading":
            raise LedgerError(f"must be 'reading', got {show_value(b['type'])}", "type", k)
        m = name_field(b, "meter", k)
        reg = self.meters.get(m)
        if reg is None:
            raise LedgerError(f"meter {m!r} is not registered", "meter", k)
        owner, last_seq, last_end, max_w = reg
        start = int_field(b, "start", k)
        end = int_field(b, "end", k)
        if end <= start:
            raise LedgerError("must be after start", "end", k)
        rseq = int_field(b, "seq", k, 1)
        problem = order_problem(rseq, start, last_seq=last_seq, last_end=last_end)
        if problem is not None:
            raise LedgerError(problem.message, problem.field, k)
        produced = int_field(b, "produced", k)
        consumed = int_field(b, "consumed", k)
        problem = power_problem(start, end, produced, consumed, max_w)
        if problem is not None:
            raise LedgerError(problem.message, problem.field, k)
        if type(b["sig"]) is not str:
            raise LedgerError("must be a hex signature", "sig", k)
        energy = self.bal[owner][0]
        g = self.genesis
        eff = apply_reading(
            energy, self.members[owner][0], produced, consumed, g["retail_price"],
            g["feedin_price"],
        )  # fmt: skip
        self.meters[m] = (owner, rseq, end, max_w)
        if eff.exported_wh:
            self.pending = ("grid_export", owner, eff.exported_wh, seq)
        elif eff.imported_wh:
            self.pending = ("grid_import", owner, eff.imported_wh, seq)
        return (owner, METERS, eff.balance - energy, 0)

    def _check_reading_sig(self, b: dict) -> None:
        unsigned = {x: v for x, v in b.items() if x != "sig"}
        if not verify_sig(b["meter"], unsigned, b["sig"]):
            raise LedgerError("is not the meter's signature of the reading", "sig", "reading")

    def _grid(self, b: dict, kind: str, price_key: str) -> tuple[str, int, int, Any]:
        who = self._member_acct(b, "owner", kind)
        qty = int_field(b, "qty", kind, 1)
        price = int_field(b, "price", kind)
        want = self.genesis[price_key]
        if price != want:
            raise LedgerError(f"must be the genesis {price_key} {want}, got {price}", "price", kind)
        r = b.get("reading")
        if r is not None:  # apply() has checked that a reading is pending with this seq
            p = self.pending
            if p is None or (p[1], p[2]) != (who, qty):
                want_text = f"{p[2]} Wh for {p[1]}" if p else "nothing"
                raise LedgerError(f"reading {r} leaves {want_text} to the grid", "qty", kind)
            self.pending = None
        return who, qty, qty * price, r

    def _grid_import(self, b: dict, seq: int) -> Any:
        k = "grid_import"
        who, qty, cost, r = self._grid(b, k, "retail_price")
        if r is None:  # bought from the grid into the household's storage
            if "billed" in b:
                raise LedgerError("only a reading's import can be billed", "billed", k)
            return (who, GRID, qty, -cost)
        # Consumed straight from the grid: the energy never enters the balance. What the
        # household's money cannot pay is billed by its supplier outside the ledger.
        billed = max(0, cost - self.bal[who][1])
        if b.get("billed", 0) != billed or b.get("billed") == 0:
            want = f"{billed}" if billed else "absent (nothing billed)"
            raise LedgerError(f"must be {want}, got {show_value(b.get('billed'))}", "billed", k)
        paid = cost - billed
        return [(GRID, -qty, paid), (METERS, qty, 0), (who, 0, -paid)]

    def _grid_export(self, b: dict, seq: int) -> Any:
        who, qty, pay, r = self._grid(b, "grid_export", "feedin_price")
        if r is None:  # sold out of the household's storage
            return (who, GRID, -qty, pay)
        # Produced above Bmax: straight from the meter to the grid, paid at feed-in.
        return [(METERS, -qty, 0), (GRID, qty, -pay), (who, 0, pay)]

    def _opening(self, b: dict, seq: int) -> Any:
        """A member's balances before the community's first trade (e.g. an order log's
        account lines): energy from `@meters` (metered before the ledger began), money from
        `@bank`. Only for a member whose balances are still zero, before any trade."""
        k = "opening"
        who = self._member_acct(b, "owner", k)
        energy = int_field(b, "energy", k, 0)
        money = int_field(b, "money", k, 0)
        if energy == 0 and money == 0:
            raise LedgerError("an opening must bring energy or money", "energy", k)
        if self.first_trade:
            raise LedgerError(
                f"openings must come before the first trade (entry {self.first_trade})",
                "owner",
                k,
            )
        if self.bal.get(who, (0, 0)) != (0, 0):
            raise LedgerError(f"{who} is already open: its balances are not zero", "owner", k)
        bmax = self.members[who][0]
        if energy > bmax:
            raise LedgerError(f"{energy} Wh is above {who}'s bmax {bmax}", "energy", k)
        return [(who, energy, money), (METERS, -energy, 0), (BANK, 0, -money)]

    def _deposit(self, b: dict, seq: int) -> Any:
        who = self._member_acct(b, "owner", "deposit")
        amt = int_field(b, "amount", "deposit", 1)
        return (who, BANK, 0, amt)

    def _withdrawal(self, b: dict, seq: int) -> Any:
        who = self._member_acct(b, "owner", "withdrawal")
        amt = int_field(b, "amount", "withdrawal", 1)
        return (who, BANK, 0, -amt)

    def _trade(self, b: dict, seq: int) -> Any:
        k = "trade"
        members = self.members
        buyer, seller = b["buyer"], b["seller"]
        if type(buyer) is not str or buyer not in members:
            self._member_acct(b, "buyer", k)
        if type(seller) is not str or seller not in members:
            self._member_acct(b, "seller", k)
        if buyer == seller:
            raise LedgerError("buyer and seller are the same account", "seller", k)
        qty, price = b["qty"], b["price"]
        if type(qty) is not int or not 0 < qty <= I64:
            int_field(b, "qty", k, 1)
        g = self.genesis
        if type(price) is not int or not g["price_min"] <= price <= g["price_max"]:
            int_field(b, "price", k)
            raise LedgerError(
                f"must be within [{g['price_min']}, {g['price_max']}], got {price}", "price", k
            )
        for f in ("bid", "ask"):
            v = b[f]
            if type(v) is not str or not 0 < len(v) <= MAX_NAME:
                name_field(b, f, k)
        iv = b["interval"]
        if type(iv) is not int or iv < 0:
            int_field(b, "interval", k)
        money = qty * price
        if not self.first_trade:
            self.first_trade = seq
        return (buyer, seller, qty, -money)

    def _fee(self, b: dict, seq: int) -> Any:
        k = "fee"
        who = self._member_acct(b, "owner", k)
        amt = int_field(b, "amount", k, 1)
        t = b["trade"]
        if "interval" in b:
            if t is not None:
                raise LedgerError("a storage fee (with an interval) has trade null", "trade", k)
            self._storage_fee(b, who, amt)
        elif type(t) is not int or not 0 < t < seq:
            raise LedgerError(
                f"must be the seq of an earlier entry (a trade fee), got {show_value(t)}; "
                "a storage fee names its interval instead",
                "trade",
                k,
            )
        return (who, self.funds["fees"], 0, -amt)

    def _storage_fee(self, b: dict, who: str, amt: int) -> None:
        """Recompute one storage fee: a group per interval, members in account order, each
        charged once, exactly min(storage_fee(energy, rate), money) (settlement-rules.md)."""
        k = "fee"
        iv = int_field(b, "interval", k)
        rate = self.genesis.get("storage_rate", 0)
        if not rate:
            raise LedgerError("the genesis sets no storage_rate", "interval", k)
        if iv <= self.last_interval:
            raise LedgerError(f"interval {iv} is already closed", "interval", k)
        grp = self.storage_group
        if grp is None:
            if iv <= self.storage_interval:
                raise LedgerError(
                    f"the storage fees up to interval {self.storage_interval} are already "
                    "charged: a second charge",
                    "interval",
                    k,
                )
            grp = self.storage_group = [iv, {}, 0, ""]
        elif grp[0] != iv:
            raise LedgerError(f"must be {grp[0]}, like the fees before it", "interval", k)
        if who <= grp[3]:
            problem = "is charged twice" if who in grp[1] else "is out of account order"
            raise LedgerError(f"{who} {problem} in interval {iv}'s storage fees", "owner", k)
        want = self._storage_due(who, rate)
        if amt != want:
            energy, money = self.bal[who]
            raise LedgerError(
                f"must be {want}: the fee on {energy} Wh at rate {rate}, capped at money {money}",
                "amount",
                k,
            )
        grp[1][who] = amt
        grp[2] += amt
        grp[3] = who

    def storage_shares(self, total: int) -> list[dict[str, Any]]:
        """The fee_split shares of ``total`` storage fees (fees.split_fees, zeros left out)."""
        providers = {o: bmax for o, (bmax, sto) in self.members.items() if sto and bmax}
        if not providers:
            raise LedgerError("no member has storage to receive the providers' share")
        want = split_fees(total, providers, self.funds["education"], self.funds["network"])
        return [{"account": a, "amount": v} for a, v in sorted(want.items()) if v]

    def _storage_due(self, who: str, rate: int) -> int:
        energy, money = self.bal[who]
        return min(storage_fee(energy, rate), money) if energy > 0 else 0

    def _storage_split(self, b: dict) -> None:
        """The fee_split that ends a storage group must be the documented split of exactly
        what the group collected, and every member not charged must owe nothing."""
        k = "fee_split"
        iv, charged, total, _last = self.storage_group  # type: ignore[misc]
        rate = self.genesis["storage_rate"]
        for who in self.members:
            if who not in charged and self._storage_due(who, rate):
                raise LedgerError(
                    f"{who} owes a storage fee for interval {iv} but was not charged", "fund", k
                )
        if b["fund"] != "fees":
            raise LedgerError("the storage fees are split out of 'fees'", "fund", k)
        shares = self.storage_shares(total)
        if b["shares"] != shares:
            raise LedgerError(
                f"must be the split of the {total} collected in interval {iv}: "
                f"{show_value(shares)}",
                "shares",
                k,
            )
        self.storage_group = None
        self.storage_interval = iv

    def _fee_split(self, b: dict, seq: int) -> Any:
        k = "fee_split"
        fund = name_field(b, "fund", k)
        if fund not in self.funds:
            raise LedgerError(f"{fund!r} is not a fund of the genesis", "fund", k)
        if self.storage_group is not None:
            self._storage_split(b)
        src = self.funds[fund]
        shares = b["shares"]
        if type(shares) is not list or not shares:
            raise LedgerError("must be a non-empty list of {account, amount}", "shares", k)
        out: list[tuple[str, int, int]] = []
        total = 0
        for i, s in enumerate(shares):
            if type(s) is not dict or s.keys() != {"account", "amount"}:
                raise LedgerError(f"share {i} must be exactly {{account, amount}}", "shares", k)
            acct, amt = s["account"], s["amount"]
            if type(acct) is not str or acct not in self.bal or acct in EXTERNAL:
                raise LedgerError(
                    f"share {i}: {show_value(acct)} is not a member or fund account", "shares", k
                )
            if type(amt) is not int or not 0 < amt <= I64:
                raise LedgerError(f"share {i}: amount must be a positive integer", "shares", k)
            total += amt
            out.append((acct, 0, amt))
        out.append((src, 0, -total))
        return out

    def _correction(self, b: dict, seq: int) -> Any:
        k = "correction"
        c = b["corrects"]
        if type(c) is not int or not 0 < c < seq:
            raise LedgerError(
                f"must be the seq of an earlier entry, got {show_value(c)}", "corrects", k
            )
        who = name_field(b, "authorised_by", k)
        if who not in self.genesis.get("auditors", ()):
            raise LedgerError(
                f"{who!r} is not an auditor of the genesis (only auditors sign corrections)",
                "authorised_by",
                k,
            )
        if type(b["sig"]) is not str:
            raise LedgerError("must be the auditor's hex signature", "sig", k)
        if type(b["reason"]) is not str:
            raise LedgerError("must be a string", "reason", k)
        adj = b["adjustments"]
        if type(adj) is not list or not adj:
            raise LedgerError(
                "must be a non-empty list of {account, energy, money}", "adjustments", k
            )
        out = []
        for i, a in enumerate(adj):
            if type(a) is not dict or a.keys() != {"account", "energy", "money"}:
                raise LedgerError(
                    f"adjustment {i} must be exactly {{account, energy, money}}", "adjustments", k
                )
            if type(a["account"]) is not str or a["account"] not in self.bal:
                raise LedgerError(
                    f"adjustment {i}: no account {show_value(a['account'])}", "adjustments", k
                )
            try:
                out.append(
                    (
                        a["account"],
                        signed_int_field(a, "energy", k),
                        signed_int_field(a, "money", k),
                    )
                )
            except LedgerError as exc:
                raise LedgerError(f"adjustment {i}: {exc.problem}", "adjustments", k) from None
        if sum(x[1] for x in out) or sum(x[2] for x in out):
            raise LedgerError(
                "energy and money adjustments must each sum to zero "
                "(use @grid, @bank or @meters for the outside world)",
                "adjustments",
                k,
            )
        return out

    def _check_correction_sig(self, b: dict) -> None:
        unsigned = {x: v for x, v in b.items() if x != "sig"}
        if not verify_sig(b["authorised_by"], unsigned, b["sig"]):
            raise LedgerError("is not the auditor's signature", "sig", "correction")

    def _interval_close(self, b: dict, seq: int) -> None:
        k = "interval_close"
        iv = int_field(b, "interval", k)
        if iv <= self.last_interval:
            raise LedgerError(
                f"must be after the previous close's interval {self.last_interval}, got {iv}",
                "interval",
                k,
            )
        rate = self.genesis.get("storage_rate", 0)
        if rate and iv > self.storage_interval:
            for who in sorted(self.members):
                if self._storage_due(who, rate):
                    raise LedgerError(
                        f"interval {iv}'s storage fees were not charged ({who} owes one)",
                        "interval",
                        k,
                    )
        n = int_field(b, "entries", k)
        want = seq - 1 - self.last_close
        if n != want:
            raise LedgerError(
                f"must be {want} (entries since the last close), got {n}", "entries", k
            )
        hex64_field(b, "digest", k)
        hex64_field(b, "merkle_root", k)
        if "set" in b:
            hex64_field(b, "set", k)
        self.last_close = seq
        self.last_interval = iv


_HANDLERS = {k: getattr(LedgerState, "_" + k) for k in KINDS}


def with_grid_entries(st: LedgerState, items: list, now: int) -> list:
    """``items`` with each reading's grid entry inserted after it where the writer left it
    out, found by folding the batch on a copy of the state (signatures are checked later,
    when the batch is applied for real)."""
    sim = st.copy()
    out: list = []
    for i, item in enumerate(items):
        out.append(item)
        kind, body = item[0], item[1]
        ets = item[2] if len(item) == 3 else now
        try:
            sim.apply(sim.seq + 1, ets, kind, body, check_sig=False)
        except LedgerError:
            return out + items[i + 1 :]  # the real fold names the problem
        p = sim.pending
        if p is None or kind != "reading":
            continue
        nxt = items[i + 1] if i + 1 < len(items) else None
        if nxt is not None and nxt[0] == p[0] and type(nxt[1]) is dict and "reading" in nxt[1]:
            continue  # the writer wrote it
        gkind, owner, qty, rseq = p
        g = sim.genesis
        price = g["retail_price"] if gkind == "grid_import" else g["feedin_price"]
        grid = {"owner": owner, "qty": qty, "price": price, "reading": rseq}
        billed = qty * price - sim.bal[owner][1]
        if gkind == "grid_import" and billed > 0:
            grid["billed"] = billed
        out.append((gkind, grid, ets))
        sim.apply(sim.seq + 1, ets, gkind, grid, check_sig=False)
    return out


def _negative(acct: str, cur: tuple[int, int], de: int, dm: int, kind: str) -> NoReturn:
    neg_e = cur[0] + de < 0
    what = "energy" if neg_e else "money"
    have = cur[0] if neg_e else cur[1]
    need = -de if neg_e else -dm
    raise LedgerError(f"{acct} would go negative: {what} balance {have}, needs {need}", None, kind)


def _over_bmax(acct: str, energy: int, bmax: int, kind: str) -> NoReturn:
    raise LedgerError(f"{acct} would hold {energy} Wh, above its bmax {bmax}", None, kind)


def _overflow(kind: str) -> NoReturn:
    raise LedgerError(f"a balance would leave the 64-bit range (|x| <= {I64})", None, kind)
