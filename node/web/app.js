// lifeline's web app. Every call goes to this node's own /api; nothing is
// fetched from anywhere else. Text from the network is only ever set as
// textContent, never parsed as HTML.

// position: [lat, lon] once the person typed or located it (SOS page).
const state = { csrf: "", me: null, inbox: [], sent: [], page: "", position: null };

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

// Kilometres between two [lat, lon] points (haversine).
function km(a, b) {
  const rad = Math.PI / 180;
  const dLat = (b[0] - a[0]) * rad;
  const dLon = (b[1] - a[1]) * rad;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(a[0] * rad) * Math.cos(b[0] * rad) * Math.sin(dLon / 2) ** 2;
  return 12742 * Math.asin(Math.min(1, Math.sqrt(h)));
}

// How far an alert's nearest shape is from `at` (0: inside a circle; a
// polygon counts by its nearest corner), or null without shapes.
function alertDistance(a, at) {
  let best = null;
  for (const s of a.shapes) {
    const d = s.center ? Math.max(0, km(at, s.center) - s.radius_km) : Math.min(...s.ring.map((p) => km(at, p)));
    if (best === null || d < best) best = d;
  }
  return best;
}

async function loadAlerts() {
  const { alerts } = await api("alerts");
  const rank = { Extreme: 0, Severe: 1, Moderate: 2, Minor: 3 };
  const at = state.position;
  for (const a of alerts) a.distance = at ? alertDistance(a, at) : null;
  // Nearest first when this page knows where it is; else the most severe.
  alerts.sort((a, b) => (at ? (a.distance ?? 1e9) - (b.distance ?? 1e9) : 0) ||
    (rank[a.severity] ?? 4) - (rank[b.severity] ?? 4) || b.sent_ms - a.sent_ms);
  fill("alerts", "alerts-empty", alerts.map((a) => el("li", { class: `severity-${a.severity}` },
    el("div", { class: "meta", text: `${a.severity} · ${a.event} · ${a.status === "Actual" ? "" : a.status + " · "}from ${a.sender}` }),
    el("strong", { text: a.headline || a.event }),
    a.area ? el("div", { class: "meta", text: "Area: " + a.area }) : null,
    a.instruction ? el("div", { class: "body", text: a.instruction }) : null,
    a.distance != null ? el("div", { class: "meta", text: a.distance < 0.5 ? "Its area is where you are" : `About ${Math.round(a.distance)} km from you` }) : null,
    el("div", { class: "meta", text: a.until_replaced ? "In force until replaced" : "Until " + new Date(a.expires_ms).toLocaleString() }))));
}

// The map: Leaflet, drawn over the operator's offline tiles when there
// are some, else over plain latitude and longitude lines.
const COLOUR = { Extreme: "#6b0f09", Severe: "#d93025", Moderate: "#e07b00", Minor: "#c9b400" };
const map = { view: null, grid: null, overlay: null, shown: "" };

function initMap() {
  const view = L.map("map", { worldCopyJump: true, attributionControl: false, zoomSnap: 0.5 })
    .setView([20, 0], 2);
  L.control.scale({ imperial: false, maxWidth: 160 }).addTo(view);
  if (state.me.tiles && window.pmtiles) {
    pmtiles.leafletRasterLayer(new pmtiles.PMTiles("/api/tiles.pmtiles"), {}).addTo(view);
  } else {
    map.grid = L.layerGroup().addTo(view);
    view.on("moveend resize", drawGrid);
  }
  map.overlay = L.featureGroup().addTo(view);
  view.on("moveend", () => {
    const c = view.getCenter();
    $("map-at").textContent = `Centre of the map: ${c.lat.toFixed(4)}, ${c.lng.toFixed(4)}`;
  });
  map.view = view;
  drawGrid();
}

// Latitude and longitude lines, a few across the view whatever the zoom.
function drawGrid() {
  if (!map.grid) return;
  map.grid.clearLayers();
  const b = map.view.getBounds();
  const span = Math.max(b.getNorth() - b.getSouth(), (b.getEast() - b.getWest()) / 2);
  const steps = [45, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001];
  const step = steps.find((x) => span / x >= 3) ?? 0.001;
  const digits = step >= 1 ? 0 : Math.ceil(-Math.log10(step));
  const south = Math.max(-85, Math.floor(b.getSouth() / step) * step);
  const north = Math.min(85, Math.ceil(b.getNorth() / step) * step);
  const west = Math.floor(b.getWest() / step) * step;
  const east = Math.ceil(b.getEast() / step) * step;
  const line = { color: "#9aa3ad", weight: 1, opacity: 0.7, interactive: false };
  const label = (at, text) => L.marker(at, {
    interactive: false, keyboard: false,
    icon: L.divIcon({ className: "graticule-label", html: text, iconSize: null }),
  });
  for (let i = 0, lat = south; lat <= north + step / 1e6 && i < 40; i++, lat = south + i * step) {
    map.grid.addLayer(L.polyline([[lat, west], [lat, east]], line));
    map.grid.addLayer(label([lat, b.getWest()], `${lat.toFixed(digits)}°`));
  }
  for (let i = 0, lon = west; lon <= east + step / 1e6 && i < 80; i++, lon = west + i * step) {
    map.grid.addLayer(L.polyline([[south, lon], [north, lon]], line));
    const above = b.getSouth() + (b.getNorth() - b.getSouth()) * 0.06;
    map.grid.addLayer(label([above, lon], `${lon.toFixed(digits)}°`));
  }
}

function popup(title, detail) {
  return el("div", {}, el("strong", { text: title }), el("div", { class: "meta", text: detail }));
}

async function loadMap() {
  if (!map.view) initMap();
  map.view.invalidateSize();
  const [{ alerts }, { messages }] = await Promise.all([api("alerts"), api("inbox")]);
  const features = [];
  for (const a of alerts) {
    for (const s of a.shapes) {
      const colour = COLOUR[a.severity] || COLOUR.Minor;
      const style = { color: colour, weight: 2, fillOpacity: 0.25, className: "alert-shape" };
      const layer = s.center
        ? (s.radius_km > 0 ? L.circle(s.center, { ...style, radius: s.radius_km * 1000 }) : L.circleMarker(s.center, style))
        : L.polygon(s.ring, style);
      const title = a.headline || a.event;
      layer.bindPopup(popup(title, `${a.severity} · ${s.area}`));
      features.push({ key: a.identifier + s.area, layer, text: `${a.severity} alert: ${title} (${s.area})` });
    }
  }
  for (const m of messages.filter((x) => x.kind === "sos" && x.lat != null)) {
    const layer = L.circleMarker([m.lat, m.lon], {
      radius: 9, color: "#fff", weight: 2, fillColor: "#b3261e", fillOpacity: 1, className: "sos-marker",
    });
    layer.bindPopup(popup("SOS: " + m.text, `from ${short(m.from)}, ${when(m.received_ms)}`));
    features.push({ key: m.id, layer, text: `SOS at ${m.lat.toFixed(5)}, ${m.lon.toFixed(5)}: ${m.text}` });
  }
  const shown = features.map((f) => f.key).join("|");
  if (shown === map.shown) return;
  map.shown = shown;
  map.overlay.clearLayers();
  for (const f of features) map.overlay.addLayer(f.layer);
  if (features.length) map.view.fitBounds(map.overlay.getBounds().pad(0.2), { maxZoom: 14 });
  // The same features as a list, for keyboards and screen readers.
  $("map-list").replaceChildren(...features.map((f) => el("li", {},
    el("span", { text: f.text + " " }),
    el("button", {
      type: "button", class: "secondary", text: "Show on the map",
      onclick: () => {
        const at = f.layer.getBounds ? f.layer.getBounds().getCenter() : f.layer.getLatLng();
        map.view.setView(at, Math.max(map.view.getZoom(), 10));
        f.layer.openPopup(at);
        $("map").scrollIntoView({ block: "nearest" });
      },
    }))));
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
  map: loadMap,
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
    if (lat !== null && lon !== null) state.position = [lat, lon];
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
        state.position = [p.coords.latitude, p.coords.longitude];
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
    const refresh = { messages: loadSent, sos: loadSent, network: loadNetwork, alerts: loadAlerts, map: loadMap }[state.page];
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
