// lifeline's web app. Every call goes to this node's own /api; nothing is
// fetched from anywhere else. Text from the network is only ever set as
// textContent, never parsed as HTML.

const state = { csrf: "", me: null, inbox: [], sent: [], page: "" };

function $(id) { return document.getElementById(id); }

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
}

function showProblem(text) {
  const p = $("problem");
  p.textContent = text || "";
  p.hidden = !text;
}

async function api(path, body) {
  const options = { credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    options.method = "POST";
    options.headers["content-type"] = "application/json";
    options.headers["x-lifeline-csrf"] = state.csrf;
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch("/api/" + path, options);
  } catch {
    throw new Error("The node does not answer. Is it running? This page retries by itself.");
  }
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) {
    window.location.assign("/pair");
  }
  if (!response.ok) throw new Error(data.error || `The node answered ${response.status}.`);
  return data;
}

function when(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  const age = (Date.now() - ms) / 1000;
  if (age < 60) return "just now";
  if (age < 3600) return `${Math.round(age / 60)} min ago`;
  return d.toLocaleString();
}

function short(id) { return id && id.length > 16 ? id.slice(0, 8) + "…" + id.slice(-6) : id; }

function place(m) {
  return m.lat != null && m.lon != null ? ` at ${m.lat.toFixed(5)}, ${m.lon.toFixed(5)}` : "";
}

// The people words for a message's status.
const STATUS = {
  queued: "queued: waiting for a path",
  forwarded: "forwarded",
  "in-custody": "in custody at a relay",
  delivered: "delivered",
  acknowledged: "acknowledged",
  expired: "expired undelivered",
  evicted: "dropped by a full relay",
  unknown: "unknown",
};

function fill(listId, emptyId, items) {
  const list = $(listId);
  list.replaceChildren(...items);
  $(emptyId).hidden = items.length > 0;
}

function renderInbox() {
  const items = state.inbox.filter((m) => m.kind !== "sos").map((m) =>
    el("li", { "data-id": m.id },
      el("div", { class: "meta", text: `From ${short(m.from)} · ${m.hops} hop${m.hops === 1 ? "" : "s"} · ${when(m.received_ms)}` }),
      el("div", { class: "body", text: m.text })));
  fill("inbox", "inbox-empty", items);
  const sos = state.inbox.filter((m) => m.kind === "sos").map(renderIncomingSos);
  fill("incoming-sos", "incoming-sos-empty", sos);
}

function renderIncomingSos(m) {
  const note = el("input", { "aria-label": "Note for the sender", placeholder: "e.g. team of 2 on the way, 20 min" });
  const result = el("p", { class: "result", role: "status" });
  const button = el("button", {
    type: "button", text: "Help is coming",
    onclick: async () => {
      button.disabled = true;
      try {
        await api("sos/ack", { id: m.id, note: note.value });
        result.textContent = "Acknowledged: the sender sees that help is coming.";
      } catch (e) { result.textContent = e.message; button.disabled = false; }
    },
  });
  return el("li", { class: "sos", "data-id": m.id },
    el("div", { class: "meta", text: `SOS from ${short(m.from)}${place(m)} · ${m.hops} hops · ${when(m.received_ms)}` }),
    el("div", { class: "body", text: m.text }), note, button, result);
}

function receiptsOf(m) {
  return m.receipts.map((r) => {
    if (r.startsWith("SosAck from ")) return el("div", { class: "coming", text: "Help is coming: " + r.slice(12) });
    if (r.startsWith("Receipt from ")) return el("div", { class: "meta", text: "Received by " + r.slice(13) });
    return el("div", { class: "meta", text: r });
  });
}

function renderSent() {
  const item = (m) => el("li", { class: m.kind === "sos" ? "sos" : "", "data-id": m.id },
    el("div", { class: "meta", text: `${m.kind === "sos" ? "SOS to" : "To"} ${m.to} · ${when(m.sent_ms)}` }),
    el("div", { class: "body", text: m.text }),
    el("span", { class: `status ${m.status}`, text: STATUS[m.status] || m.status }),
    ...receiptsOf(m));
  fill("sent", "sent-empty", state.sent.filter((m) => m.kind !== "sos").map(item));
  fill("my-sos", "my-sos-empty", state.sent.filter((m) => m.kind === "sos").map(item));
}

async function loadInbox() {
  state.inbox = (await api("inbox")).messages;
  renderInbox();
}

async function loadSent() {
  state.sent = (await api("sent")).messages;
  renderSent();
}

async function loadAlerts() {
  const { alerts } = await api("alerts");
  const rank = { Extreme: 0, Severe: 1, Moderate: 2, Minor: 3 };
  alerts.sort((a, b) => (rank[a.severity] ?? 4) - (rank[b.severity] ?? 4) || b.sent_ms - a.sent_ms);
  fill("alerts", "alerts-empty", alerts.map((a) => el("li", { class: `severity-${a.severity}` },
    el("div", { class: "meta", text: `${a.severity} · ${a.event} · ${a.status === "Actual" ? "" : a.status + " · "}from ${a.sender}` }),
    el("strong", { text: a.headline || a.event }),
    a.area ? el("div", { class: "meta", text: "Area: " + a.area }) : null,
    a.instruction ? el("div", { class: "body", text: a.instruction }) : null,
    el("div", { class: "meta", text: a.until_replaced ? "In force until replaced" : "Until " + new Date(a.expires_ms).toLocaleString() }))));
}

function facts(id, pairs) {
  $(id).replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
}

async function loadNetwork() {
  const n = await api("network");
  facts("network-summary", [
    ["Neighbours", n.peers.length],
    ["Routes", n.routes.length],
    ["Held for others", `${n.custody_messages} messages`],
    ["Reachability", n.reachability],
    ["Chain", n.chain.enabled ? `block ${n.chain.head}, final up to ${n.chain.finalized}` : "none"],
  ]);
  $("peers").replaceChildren(...n.peers.map((p) => el("tr", {},
    el("td", { text: short(p.id), title: p.id }),
    el("td", { text: p.rtt_ms == null ? "–" : `${p.rtt_ms.toFixed(1)} ms` }),
    el("td", { text: p.mesh ? "yes" : "no" }),
    el("td", { text: String(p.misbehaviour) }))));
  $("routes").replaceChildren(...n.routes.map((r) => el("tr", {},
    el("td", { text: short(r.destination), title: r.destination }),
    el("td", { text: short(r.next_hop), title: r.next_hop }),
    el("td", { text: String(r.metric) }))));
}

function renderMe() {
  const me = state.me;
  const reg = me.registered;
  facts("me-facts", [
    ["Name", reg ? reg.name : "not registered on the chain"],
    ["Roles", reg && reg.roles.length ? reg.roles.join(", ") : "none"],
    ["Fingerprint", me.fingerprint],
    ["Id", me.id],
  ]);
  $("my-card").value = me.card;
}

const PAGES = {
  messages: () => Promise.all([loadInbox(), loadSent()]),
  sos: () => Promise.all([loadInbox(), loadSent()]),
  alerts: loadAlerts,
  network: loadNetwork,
  me: async () => renderMe(),
};

async function show() {
  const page = PAGES[location.hash.slice(1)] ? location.hash.slice(1) : "messages";
  state.page = page;
  for (const name of Object.keys(PAGES)) $("page-" + name).hidden = name !== page;
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.page === page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  try {
    await PAGES[page]();
    showProblem("");
  } catch (e) { showProblem(e.message); }
}

function listen() {
  const events = new EventSource("/api/events");
  events.addEventListener("message", (e) => {
    const m = JSON.parse(e.data);
    if (!state.inbox.some((x) => x.id === m.id)) state.inbox.unshift(m);
    renderInbox();
  });
  events.addEventListener("lagged", () => loadInbox().catch(() => {}));
}

function wire() {
  $("compose").addEventListener("submit", async (e) => {
    e.preventDefault();
    const result = $("compose-result");
    const button = e.submitter;
    button.disabled = true;
    result.textContent = "Sending…";
    try {
      const { id } = await api("send", { to: $("to").value, card: $("card").value, text: $("text").value });
      result.textContent = `Sent (id ${short(id)}). Its status shows below.`;
      $("text").value = "";
      await loadSent();
    } catch (err) { result.textContent = err.message; }
    button.disabled = false;
  });
  $("sos-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const result = $("sos-result");
    const number = (v) => (v.trim() === "" ? null : Number(v.trim().replace(",", ".")));
    const lat = number($("lat").value);
    const lon = number($("lon").value);
    if (Number.isNaN(lat) || Number.isNaN(lon)) {
      result.textContent = "The position must be numbers in degrees, like 45.4215 and -75.6972.";
      return;
    }
    $("sos-send").disabled = true;
    result.textContent = "Sending SOS…";
    try {
      await api("sos", { text: $("sos-text").value, lat, lon });
      result.textContent = "SOS sent to everyone in reach. Who received it, and who answers, shows below.";
      await loadSent();
    } catch (err) { result.textContent = err.message; }
    $("sos-send").disabled = false;
  });
  $("locate").addEventListener("click", () => {
    const result = $("sos-result");
    if (!navigator.geolocation || !window.isSecureContext) {
      result.textContent = "This browser gives its position only to pages on this device; type it, or send without one.";
      return;
    }
    result.textContent = "Finding your position…";
    navigator.geolocation.getCurrentPosition(
      (p) => {
        $("lat").value = p.coords.latitude.toFixed(5);
        $("lon").value = p.coords.longitude.toFixed(5);
        result.textContent = `Position found (within ${Math.round(p.coords.accuracy)} m).`;
      },
      () => { result.textContent = "No position from this device; type it, or send without one."; },
      { enableHighAccuracy: true, timeout: 15000 });
  });
  $("logout").addEventListener("click", async () => {
    try { await api("logout", {}); } catch { /* unpaired anyway */ }
    window.location.assign("/");
  });
  window.addEventListener("hashchange", show);
  // Statuses change without an event (receipts, custody): the open page
  // refreshes them every few seconds.
  setInterval(() => {
    if (document.hidden) return;
    const refresh = { messages: loadSent, sos: loadSent, network: loadNetwork, alerts: loadAlerts }[state.page];
    if (refresh) refresh().then(() => showProblem(""), (e) => showProblem(e.message));
  }, 3000);
}

async function start() {
  wire();
  try {
    state.me = await api("me");
    state.csrf = state.me.csrf;
  } catch (e) { showProblem(e.message); return; }
  listen();
  await show();
}

start();
