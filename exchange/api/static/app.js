// The household's page (docs/dashboard.md): reads the node's API with the session cookie
// and follows its event stream. The API's units: energy in Wh, money in nano-currency,
// prices in micro-currency per kWh, times in ms since the epoch (community time).
"use strict";

const API = "/api/v1";
const KEEP = 48; // intervals in the chart: half a day of 15-minute intervals
const ROWS = 12; // rows of the trade, reading and interval tables
const HEAD_EVERY_MS = 60000; // verifying the ledger reads all of it: not on every event
const ALL = ["status", "balance", "book", "orders", "trades", "intervals", "readings",
  "savings", "bot", "head"];

const $ = (id) => document.getElementById(id);
const S = {
  csrf: null, level: null, me: null, status: null, open: null, intervalMs: 900000,
  gateAt: null, stream: null, streamOpened: false, pending: new Set(), timer: null,
  intervals: [], intervalsAfter: 0, trades: [], tradesAfter: 0, readings: [],
  readingsAfter: 0, headAt: 0,
};

// -- formatting --

const pad = (n) => String(n).padStart(2, "0");
const hhmm = (ms) => {
  const d = new Date(ms);
  return pad(d.getHours()) + ":" + pad(d.getMinutes());
};
const kwh = (wh) => (wh / 1000).toFixed(2) + " kWh";
/** Money as a person reads it: the community's symbol (if its file names one), 2 decimals. */
const cur = (nano) => {
  const text = (Math.abs(nano) / 1e9).toFixed(2);
  const sign = nano < 0 ? "-" : "";
  const symbol = (S.status && S.status.community && S.status.community.currency) || "";
  return symbol.length === 1 ? `${sign}${symbol}${text}` : `${sign}${text}${symbol ? " " + symbol : ""}`;
};
const perKwh = (micro) => (micro == null ? "–" : (micro / 1e6).toFixed(4) + "/kWh");
const short = (id) => String(id).slice(0, 8) + "…";
/** A member as a person knows it: its display name from the community file, if any. */
const who = (peer) => (S.status && S.status.names && S.status.names[peer]) || short(peer);

/** An element with attributes and children (strings become text, never HTML). */
function el(tag, attrs = {}, ...children) {
  const svg = ["path", "rect", "line", "text", "circle", "title"]; // inside an <svg>
  const e = svg.includes(tag)
    ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v != null) e.setAttribute(k, v);
  for (const c of children) if (c != null) e.append(c);
  return e;
}
const fill = (node, ...children) => node.replaceChildren(...children);
const rows = (table, trs, empty) => fill(table.tBodies[0],
  ...(trs.length ? trs : [el("tr", {}, el("td", { colspan: 9, class: "muted" }, empty))]));

/** "0.15" -> 150000 with scale 1e6; null for anything that is not a plain number. */
function decimal(text, scale) {
  const t = String(text).trim().replace(",", ".");
  return /^\d+(\.\d+)?$/.test(t) ? Math.round(parseFloat(t) * scale) : null;
}

// -- talking to the node --

class Refused extends Error {
  constructor(status, error) {
    super(error.message);
    Object.assign(this, { status, code: error.code, field: error.field });
  }
  toString() {
    return `${this.code}${this.field ? " (" + this.field + ")" : ""}: ${this.message}`;
  }
}

async function call(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (method !== "GET" && S.csrf) headers["x-csrf-token"] = S.csrf; // the node wants it
  for (let attempt = 0; ; attempt++) {
    const r = await fetch(API + path, { method, headers, cache: "no-store",
      credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body) });
    if (r.status === 429 && attempt < 2) { // over the node's rate: wait as it asks
      const seconds = Number(r.headers.get("retry-after")) || 1;
      await new Promise((ok) => setTimeout(ok, 1000 * seconds));
      continue;
    }
    const data = await r.json().catch(() => null);
    if (r.ok) return data;
    const error = (data && data.error) || { code: "http-" + r.status, message: r.statusText };
    if (r.status === 401 && path !== "/session") location.reload(); // session gone: log in
    throw new Refused(r.status, error);
  }
}

// -- session --

async function start() {
  setInterval(tickClock, 1000);
  $("login").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("order-form").addEventListener("submit", postOrder);
  $("bot-form").addEventListener("submit", saveBot);
  try {
    enter(await call("GET", "/session"));
  } catch (e) {
    $("login-panel").hidden = false;
    $("login-code").focus();
  }
}

async function login(ev) {
  ev.preventDefault();
  const value = $("login-code").value.trim();
  // A login code looks like K7QX-M2PD; anything longer is a token.
  const body = value.length <= 12 ? { code: value } : { token: value };
  try {
    enter(await call("POST", "/session", body));
    $("login-code").value = "";
    $("login-error").textContent = "";
  } catch (e) {
    $("login-error").textContent = e.toString();
  }
}

async function logout() {
  try { await call("DELETE", "/session"); } finally { location.reload(); }
}

function enter(session) {
  S.csrf = session.csrf;
  S.level = session.level;
  document.body.classList.toggle("readonly", session.level !== "write");
  $("login-panel").hidden = true;
  $("dashboard").hidden = false;
  $("logout").hidden = false;
  $("live").hidden = false;
  want(...ALL);
  openStream();
}

// -- refreshing: parts wanted within 120 ms are fetched once --

function want(...parts) {
  parts.forEach((p) => S.pending.add(p));
  if (!S.timer) S.timer = setTimeout(flush, 120);
}

async function flush() {
  const parts = [...S.pending];
  S.pending.clear();
  try {
    // The others read S.me and S.status, so the status comes first.
    if (parts.includes("status")) await load.status().catch(problem);
    await Promise.all(parts.filter((p) => p !== "status").map((p) => load[p]().catch(problem)));
  } finally {
    S.timer = null;
    if (S.pending.size) want();
  }
}

function problem(e) {
  log("problem", e.toString(), "bad");
}

/** A paged list: the newest `keep` items at first, then what came after the last one. */
async function paged(path, key, keep) {
  const sep = path.includes("?") ? "&" : "?";
  if (!S[key + "After"]) {
    const r = await call("GET", `${path}${sep}latest=true&limit=${keep}`);
    S[key] = r.items;
    if (r.items.length) S[key + "After"] = r.items[r.items.length - 1].entry;
    return;
  }
  for (let page = 0; page < 100; page++) {
    const r = await call("GET", `${path}${sep}after=${S[key + "After"]}&limit=500`);
    if (r.items.length) {
      S[key] = S[key].concat(r.items).slice(-keep);
      S[key + "After"] = r.items[r.items.length - 1].entry;
    }
    if (r.next == null) return;
  }
}

const load = {
  async status() {
    const s = await call("GET", "/status");
    S.status = s;
    S.me = s.peer_id;
    S.intervalMs = s.clock.interval_ms;
    S.gateAt = performance.now() + s.clock.gate_in_s * 1000;
    setOpen(s.clock.open_interval);
    tickClock();
    $("community").textContent = s.community.name;
    renderHealth();
    renderIntervals(); // agreement comes from the status
  },

  async balance() {
    const b = await call("GET", "/balance");
    $("balance-energy").textContent = `${kwh(b.energy)} of ${kwh(b.bmax)}`;
    $("balance-detail").textContent = `room below Bmax ${kwh(b.headroom)}` +
      (b.committed_energy ? ` · ${kwh(b.committed_energy)} offered in open asks` : "");
    gauge(b.energy, b.bmax, b.committed_energy);
    $("money").textContent = cur(b.money);
    $("money-detail").textContent = b.committed_money
      ? `${cur(b.committed_money)} promised to open bids (at their limits)` : "";
  },

  async savings() {
    const s = await call("GET", "/savings");
    $("savings").textContent = (s.savings >= 0 ? "+" : "") + cur(s.savings);
    $("savings-detail").textContent = `cost ${cur(s.cost)} with the market, ` +
      `${cur(s.alone_cost)} with the grid alone; energy held beyond that worth ` +
      `${cur(s.held_value)}; bought ${kwh(s.bought)}, sold ${kwh(s.sold)}`;
  },

  async book() {
    const b = await call("GET", "/book");
    $("book-interval").textContent = hhmm(b.interval);
    const q = (name, quote) => el("tr", {}, el("th", {}, name),
      el("td", {}, perKwh(quote.bid)), el("td", {}, perKwh(quote.ask)));
    fill($("quote").tBodies[0], q("plain", b.quote), q("executable", b.executable_quote));
    rows($("book-orders"), b.orders.slice(0, ROWS).map((o) => el("tr", { "data-id": o.id,
      class: o.side }, el("td", { class: "side" }, o.side), el("td", {}, perKwh(o.price)),
    el("td", {}, kwh(o.qty)), el("td", { class: "muted" }, o.owner === S.me ? "yours" : ""))),
    "no orders for this interval yet");
    depth(b.depth, b.executable_quote);
  },

  async orders() {
    const mine = await call("GET", "/orders");
    rows($("orders"), mine.map((o) => el("tr", { "data-id": o.id, class: o.side },
      el("td", {}, hhmm(o.interval)), el("td", { class: "side" }, o.side),
      el("td", {}, perKwh(o.price)), el("td", {}, kwh(o.qty)), el("td", {}, cancelButton(o.id)))),
    "no open orders");
  },

  async trades() {
    await paged("/trades?mine=true", "trades", ROWS);
    rows($("trades"), S.trades.slice().reverse().map((t) => {
      const bought = t.buyer === S.me;
      return el("tr", { class: bought ? "bid" : "ask" }, el("td", {}, hhmm(t.interval)),
        el("td", { class: "side" }, bought ? "bought" : "sold"),
        el("td", {}, perKwh(t.price)), el("td", {}, kwh(t.qty)));
    }), "no trades yet");
  },

  async intervals() {
    await paged("/intervals", "intervals", KEEP);
    renderIntervals();
    $("intervals").dataset.loaded = "yes";
  },

  async readings() {
    await paged("/readings", "readings", ROWS);
    rows($("readings"), S.readings.slice().reverse().map((r) => el("tr", {},
      el("td", {}, hhmm(r.start)), el("td", {}, (r.produced / 1000).toFixed(2)),
      el("td", {}, (r.consumed / 1000).toFixed(2)))), "no readings yet");
  },

  async bot() {
    const b = await call("GET", "/bot");
    $("bot-enabled").checked = b.enabled;
    $("bot-buy").value = b.buy_price / 1e6;
    $("bot-sell").value = b.sell_price / 1e6;
    $("bot-lower").value = b.lower_wh / 1000;
    $("bot-upper").value = b.upper_wh / 1000;
  },

  async head() {
    if (performance.now() - S.headAt < HEAD_EVERY_MS && S.head) return;
    S.headAt = performance.now();
    const h = await call("GET", "/ledger/head");
    const v = h.verified;
    S.head = v.ok ? `verifies (${v.entries} entries)` : `does NOT verify: ${v.problem}`;
    renderHealth();
  },
};

// -- writes --

function cancelButton(id) {
  const b = el("button", { type: "button", class: "cancel write" }, "Cancel");
  b.addEventListener("click", async () => {
    b.disabled = true;
    try {
      await call("DELETE", "/orders/" + encodeURIComponent(id));
      showRefusal(null);
    } catch (e) {
      showRefusal(e);
      b.disabled = false;
    }
    want("orders", "book", "balance");
  });
  return b;
}

function showRefusal(e, prefix = "Refused: ") {
  const r = $("refusal");
  r.textContent = e ? prefix + e.toString() : "";
  if (e && e.code) r.dataset.code = e.code; else delete r.dataset.code;
}

async function postOrder(ev) {
  ev.preventDefault();
  const side = $("order-side").value;
  const price = decimal($("order-price").value, 1e6); // per kWh -> micro per kWh
  const qty = decimal($("order-qty").value, 1000); // kWh -> Wh
  $("order-result").textContent = "";
  if (price == null || qty == null) {
    showRefusal("type the price and the kWh as numbers, like 0.15 and 0.5", "Not sent: ");
    return;
  }
  const ahead = Number($("order-interval").value);
  const body = { side, price, qty };
  if (ahead > 0) body.interval = S.open + ahead * S.intervalMs; // else: the node's open one
  try {
    const r = await call("POST", "/orders", body);
    showRefusal(null);
    const res = $("order-result");
    res.textContent = `Posted: ${side === "ask" ? "sell" : "buy"} ${kwh(qty)} at ` +
      `${perKwh(price)} for ${hhmm(r.interval)} (order ${short(r.id)})`;
    res.dataset.id = r.id;
  } catch (e) {
    showRefusal(e);
  }
  want("orders", "book", "balance", "status");
}

async function saveBot(ev) {
  ev.preventDefault();
  const body = {
    enabled: $("bot-enabled").checked,
    buy_price: decimal($("bot-buy").value, 1e6), sell_price: decimal($("bot-sell").value, 1e6),
    lower_wh: decimal($("bot-lower").value, 1000), upper_wh: decimal($("bot-upper").value, 1000),
  };
  const out = $("bot-result");
  try {
    const b = await call("PUT", "/bot", body);
    out.className = "ok";
    out.textContent = b.enabled
      ? `Saved: buys at ${perKwh(b.buy_price)} below ${kwh(b.lower_wh)}, sells at ` +
        `${perKwh(b.sell_price)} above ${kwh(b.upper_wh)}` : "Saved: the bot is off";
  } catch (e) {
    out.className = "error";
    out.textContent = "Refused: " + e.toString();
  }
}

// -- the live stream --

const ON = {
  "interval-opened": (d) => { setOpen(d.interval); want("book", "status"); },
  "gate-passed": () => want("book", "orders", "status"),
  "interval-settled": () => want("balance", "orders", "trades", "intervals", "savings",
    "status", "readings", "book", "head"),
  "own-accepted": () => want("orders", "book", "balance"),
  "book-changed": (d) => { if (d.interval === S.open) want("book"); },
  "own-refused": (d) => { showRefusal(new Refused(422, d)); want("status"); },
  "peer-joined": () => want("status"),
  "peer-left": () => want("status"),
  dispute: (d) => {
    const a = $("alert");
    a.hidden = false;
    a.textContent = `Dispute: a member signed two sets for interval ${hhmm(d.interval)}.`;
    want("status", "intervals");
  },
};

function describe(name, d) {
  switch (name) {
    case "interval-settled": {
      const fills = (d.fills || []).map((f) =>
        `${f.side === "bid" ? "bought" : "sold"} ${kwh(f.qty)}`);
      return `${hhmm(d.interval)} settled: ${perKwh(d.price)}, ${kwh(d.volume)} in ` +
        `${d.trades} trade${d.trades === 1 ? "" : "s"}` +
        (fills.length ? "; you " + fills.join(", ") : "");
    }
    case "interval-opened": return `orders now go to ${hhmm(d.interval)}`;
    case "gate-passed": return `gate of ${hhmm(d.interval)} passed`;
    case "own-accepted": return `${d.kind} ${short(d.id)} accepted`;
    case "own-refused": return `${d.kind} refused: ${d.code}: ${d.message}`;
    case "peer-joined": case "peer-left": return `${name.replace("-", " ")}: ${who(d.peer)}`;
    default: return JSON.stringify(d);
  }
}

function log(name, text, cls) {
  const list = $("events");
  const now = new Date();
  list.prepend(el("li", { class: cls || null },
    el("span", { class: "muted" }, `${hhmm(now)}:${pad(now.getSeconds())} `), text));
  while (list.children.length > ROWS) list.lastChild.remove();
}

function openStream() {
  const es = new EventSource(API + "/events"); // same origin: it sends the cookie
  S.stream = es;
  es.onopen = () => {
    setLive("live");
    if (S.streamOpened) want(...ALL); // events were missed while it was away
    S.streamOpened = true;
  };
  es.onerror = () => {
    setLive("reconnecting");
    if (es.readyState === EventSource.CLOSED) { // refused (too many streams, or logged out)
      setTimeout(async () => {
        try {
          await call("GET", "/session");
          openStream();
        } catch (e) {
          if (e.status === 401) location.reload(); // logged out: back to the login form
        }
      }, 3000);
    }
  };
  for (const [name, on] of Object.entries(ON)) {
    es.addEventListener(name, (m) => {
      const d = JSON.parse(m.data);
      if (name !== "book-changed") { // anyone's order: too many to list
        log(name, describe(name, d), name === "own-refused" || name === "dispute" ? "bad" : null);
      }
      on(d);
    });
  }
}

function setLive(text) {
  const b = $("live");
  b.textContent = text;
  b.className = "badge " + (text === "live" ? "on" : "off");
}

// -- the clock --

function setOpen(open) {
  if (open === S.open) return;
  S.open = open;
  document.body.dataset.open = open; // tests wait on it
  const sel = $("order-interval");
  const chosen = sel.selectedIndex;
  fill(sel, ...[0, 1, 2, 3].map((k) => el("option", { value: k },
    (k === 0 ? "next interval, " : `${k} later, `) + hhmm(open + k * S.intervalMs))));
  sel.selectedIndex = Math.max(0, chosen);
  tickClock();
}

function tickClock() {
  if (S.open == null || S.gateAt == null) return;
  const s = Math.max(0, Math.round((S.gateAt - performance.now()) / 1000));
  $("clock").textContent = `orders go to ${hhmm(S.open)} · its gate in ` +
    `${Math.floor(s / 60)}:${pad(s % 60)}`;
}

// -- charts: inline SVG --

function gauge(energy, bmax, offered) {
  const frac = bmax > 0 ? Math.min(1, energy / bmax) : 0;
  const arc = (f) => { // a half circle from the left (0) to the right (1)
    const a = Math.PI * (1 - f);
    return `M 20 100 A 80 80 0 0 1 ${100 + 80 * Math.cos(a)} ${100 - 80 * Math.sin(a)}`;
  };
  const off = bmax > 0 ? Math.min(frac, offered / bmax) : 0;
  fill($("gauge"),
    el("path", { d: arc(1), class: "track" }),
    frac > 0 ? el("path", { d: arc(frac), class: "level" }) : null,
    off > 0 ? el("path", { d: arc(off), class: "offered" }) : null,
    el("text", { x: 100, y: 88, class: "center" }, `${Math.round(frac * 100)}%`),
    el("text", { x: 20, y: 116, class: "center small" }, "0"),
    el("text", { x: 180, y: 116, class: "center small" }, "Bmax " + kwh(bmax)));
}

function depth(d, exec) {
  const svg = $("depth");
  const W = 400, H = 180, L = 40, B = 20, T = 10;
  const all = d.bid.concat(d.ask);
  if (!all.length) {
    fill(svg, el("text", { x: W / 2, y: H / 2, class: "center muted" }, "no orders yet"));
    return;
  }
  const prices = all.map((l) => l.price);
  let lo = Math.min(...prices), hi = Math.max(...prices);
  const spread = Math.max(hi - lo, hi * 0.2, 1);
  lo -= spread * 0.15; hi += spread * 0.15;
  const top = Math.max(...all.map((l) => l.cumulative));
  const x = (p) => L + ((p - lo) / (hi - lo)) * (W - L - 10);
  const y = (wh) => H - B - (wh / top) * (H - B - T);
  // Bids: the depth at p is what all bids at p or above buy, so it grows to the left.
  const steps = (levels, edge) => {
    let path = `M ${x(levels[0].price)} ${y(0)}`, prev = 0;
    for (const l of levels) {
      path += ` L ${x(l.price)} ${y(prev)} L ${x(l.price)} ${y(l.cumulative)}`;
      prev = l.cumulative;
    }
    return path + ` L ${x(edge)} ${y(prev)} L ${x(edge)} ${y(0)} Z`;
  };
  const mark = (p, cls) => (p == null ? null : el("line",
    { x1: x(p), x2: x(p), y1: T, y2: H - B, class: cls }));
  fill(svg,
    d.bid.length ? el("path", { d: steps(d.bid, lo), class: "bid" }) : null,
    d.ask.length ? el("path", { d: steps(d.ask, hi), class: "ask" }) : null,
    mark(exec.bid, "exec"), mark(exec.ask, "exec"),
    el("line", { x1: L, x2: W - 10, y1: H - B, y2: H - B, class: "axis" }),
    el("text", { x: L, y: H - 4, class: "small" }, perKwh(lo)),
    el("text", { x: W - 10, y: H - 4, class: "small end" }, perKwh(hi)),
    el("text", { x: L - 4, y: T + 8, class: "small end" }, (top / 1000).toFixed(1)),
    el("text", { x: L - 4, y: T + 20, class: "small end muted" }, "kWh"),
    el("text", { x: L + 4, y: T + 8, class: "small bid" }, "bids"),
    el("text", { x: W - 14, y: T + 8, class: "small end ask" }, "asks"),
    el("text", { x: (L + W) / 2, y: H - 4, class: "small center muted" },
      "dashed: executable quote"));
}

function renderHealth() {
  const s = S.status;
  if (!s) return;
  const refusals = Object.entries(s.refusals || {}).map(([c, n]) => `${c} ${n}`).join(", ");
  const pairs = [
    ["peers", `${s.peers} of ${s.members - 1} other members` +
      (s.peer_ids.length ? ` (${s.peer_ids.map(who).join(", ")})` : "")],
    ["settled through", s.settled_through == null ? "none yet" : hhmm(s.settled_through)],
    ["digests agreed", String(s.agreements)],
    ["digests differing", s.mismatched.length ? s.mismatched.map(hhmm).join(", ") : "none"],
    ["disputes", s.disputed.length ? s.disputed.map(hhmm).join(", ") : "none"],
    ["refusals", refusals || "none"],
  ];
  if (s.waiting) pairs.push(["waiting", `interval ${hhmm(s.waiting.interval)}: ` +
    `${s.waiting.reachable} of ${s.waiting.need} needed reachable`]);
  if (S.head) pairs.push(["ledger", S.head]);
  const bad = (k, v) => ["digests differing", "disputes"].includes(k) && v !== "none";
  fill($("health"), ...pairs.flatMap(([k, v]) => [el("dt", {}, k),
    el("dd", { class: bad(k, v) || v.includes("NOT") ? "bad" : null }, v)]));
}

function agreement(t) {
  const s = S.status;
  if (!s) return "";
  return s.mismatched.includes(t) ? "differs" : s.disputed.includes(t) ? "disputed" : "agreed";
}

function renderIntervals() {
  const items = S.intervals;
  $("intervals").dataset.count = items.length;
  rows($("interval-table"), items.slice(-ROWS / 2).reverse().map((i) => el("tr",
    { "data-interval": i.interval }, el("td", {}, hhmm(i.interval)),
    el("td", {}, perKwh(i.price)), el("td", {}, (i.volume / 1000).toFixed(2)),
    el("td", {}, String(i.trades)),
    el("td", { class: agreement(i.interval) === "agreed" ? "muted" : "bad",
      title: i.digest }, `${i.digest.slice(0, 8)} ${agreement(i.interval)}`))),
  "no settled interval yet");
  const svg = $("interval-chart");
  const W = 600, H = 180, L = 70, R = 50, B = 20, T = 10;
  if (!items.length) {
    fill(svg, el("text", { x: W / 2, y: H / 2, class: "center muted" },
      "waiting for the first settled interval"));
    return;
  }
  const priced = items.filter((i) => i.price != null).map((i) => i.price);
  const vmax = Math.max(1, ...items.map((i) => i.volume));
  const plo = priced.length ? Math.min(...priced) * 0.9 : 0;
  const phi = priced.length ? Math.max(...priced) * 1.1 : 1;
  const [top, bottom] = priced.length ? [perKwh(phi), perKwh(plo)] : ["", ""]; // axis labels
  const band = (W - L - R) / Math.max(12, items.length); // a few intervals: wide bars
  const x = (k) => L + k * band;
  const yv = (v) => H - B - (v / vmax) * (H - B - T);
  const yp = (p) => H - B - ((p - plo) / (phi - plo || 1)) * (H - B - T);
  const parts = [];
  let line = "", pen = "M";
  items.forEach((i, k) => {
    const tip = el("title", {}, `${hhmm(i.interval)}: ${perKwh(i.price)}, ${kwh(i.volume)}`);
    parts.push(el("rect", { x: x(k) + 1, y: yv(i.volume), width: Math.max(1, band - 2),
      height: H - B - yv(i.volume), class: "volume" }, tip));
    if (i.price == null) { pen = "M"; return; } // no trade: a gap in the price line
    const cx = x(k) + band / 2, cy = yp(i.price);
    line += `${pen} ${cx} ${cy} `;
    pen = "L";
    parts.push(el("circle", { cx, cy, r: 2.5, class: "price" }, tip.cloneNode(true)));
  });
  fill(svg, ...parts, line ? el("path", { d: line, class: "price" }) : null,
    el("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }),
    el("text", { x: L - 4, y: T + 8, class: "small end price" }, top),
    el("text", { x: L - 4, y: H - B, class: "small end price" }, bottom),
    el("text", { x: W - R + 4, y: T + 8, class: "small volume" }, kwh(vmax)),
    el("text", { x: L, y: H - 4, class: "small" }, hhmm(items[0].interval)),
    el("text", { x: x(items.length), y: H - 4, class: "small end" },
      hhmm(items[items.length - 1].interval)));
}

start();
