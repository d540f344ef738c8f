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
    // The session ended: "/" pairs again (on loopback it opens at once).
    window.location.assign("/");
  }
  if (!response.ok) {
    throw Object.assign(new Error(data.error || `The node answered ${response.status}.`), data);
  }
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

function hops(n) { return `${n} hop${n === 1 ? "" : "s"}`; }

// A sender as people know them: their registered name, else a short id.
function sender(m) { return m.from_name || short(m.from); }

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
      el("div", { class: "meta", text: `From ${sender(m)} · ${hops(m.hops)} · ${when(m.received_ms)}` }),
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
    el("div", { class: "meta", text: `SOS from ${sender(m)}${place(m)} · ${hops(m.hops)} · ${when(m.received_ms)}` }),
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
    // Past the file's deepest zoom its tiles are stretched, not left blank;
    // above its shallowest, shrunk.
    const source = new pmtiles.PMTiles("/api/tiles.pmtiles");
    source.getHeader().then((h) => {
      pmtiles.leafletRasterLayer(source, { minNativeZoom: h.minZoom, maxNativeZoom: h.maxZoom, maxZoom: 19 })
        .addTo(view).bringToBack();
    }, () => showProblem("The map file on this device cannot be read; the map shows plain coordinates."));
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
      // A region's shape from this node's own map data is dashed: the
      // alert named the region's code, not this outline.
      const style = s.geocode
        ? { color: colour, weight: 2, fillOpacity: 0.15, dashArray: "6 4", className: "alert-shape by-code" }
        : { color: colour, weight: 2, fillOpacity: 0.25, className: "alert-shape" };
      const layer = s.center
        ? (s.radius_km > 0 ? L.circle(s.center, { ...style, radius: s.radius_km * 1000 }) : L.circleMarker(s.center, style))
        : L.polygon(s.ring, style);
      const title = a.headline || a.event;
      const by = s.geocode ? ` (region ${s.geocode}, outline from this device's map data)` : "";
      layer.bindPopup(popup(title, `${a.severity} · ${s.area}${by}`));
      features.push({ key: a.identifier + s.area, layer, text: `${a.severity} alert: ${title} (${s.area})` });
    }
  }
  for (const m of messages.filter((x) => x.kind === "sos" && x.lat != null)) {
    const layer = L.circleMarker([m.lat, m.lon], {
      radius: 9, color: "#fff", weight: 2, fillColor: "#b3261e", fillOpacity: 1, className: "sos-marker",
    });
    layer.bindPopup(popup("SOS: " + m.text, `from ${sender(m)}, ${when(m.received_ms)}`));
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
  if (!$("my-card-qr").src) $("my-card-qr").src = "/api/card.svg";
  $("register-form").hidden = Boolean(reg) || !me.chain;
}

// The authority page: each action is a transaction; its result line
// follows it into a block.
async function follow(result, what, hash) {
  result.textContent = `${what}: sent (transaction ${short(hash)}), waiting for a block…`;
  for (let i = 0; i < 60; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    const t = await api("tx?hash=" + encodeURIComponent(hash)).catch(() => null);
    if (t && (t.status === "included" || t.status === "final")) {
      result.textContent = `${what}: in block ${t.block}${t.status === "final" ? " (final)" : ""}.`;
      return;
    }
  }
  result.textContent = `${what}: sent, not yet in a block; the network keeps it and tries again.`;
}


async function publishCap(xml) {
  const result = $("alert-result");
  result.textContent = "Checking the alert…";
  try {
    const r = await api("authority/alert", { xml });
    const notes = r.not_carried.length ? ` Not kept: ${r.not_carried.join("; ")}.` : "";
    await follow(result, `Alert ${r.identifier}` + notes, r.hash);
  } catch (e) { result.textContent = e.message; }
}

// CAP's time form: seconds, and the offset written out (never "Z").
function capTime(d) {
  const pad = (n) => String(Math.abs(n)).padStart(2, "0");
  const off = -d.getTimezoneOffset();
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:` +
    `${pad(d.getMinutes())}:${pad(d.getSeconds())}${off < 0 ? "-" : "+"}${pad(Math.trunc(off / 60))}:${pad(off % 60)}`;
}

// The form as a CAP 1.2 document, written by the browser's XML serializer
// (which escapes what people type), elements in the schema's order.
function capFromForm() {
  const NS = "urn:oasis:names:tc:emergency:cap:1.2";
  const doc = document.implementation.createDocument(NS, "alert", null);
  const add = (parent, name, text) => {
    const e = doc.createElementNS(NS, name);
    if (text !== undefined) e.textContent = text;
    parent.appendChild(e);
    return e;
  };
  const v = (id) => $(id).value.trim();
  const now = new Date();
  const hours = Number(v("a-hours") || "6");
  const root = doc.documentElement;
  add(root, "identifier", `lifeline-${state.me.id.slice(-8)}-${now.getTime()}`);
  add(root, "sender", `lifeline:${state.me.id}`);
  add(root, "sent", capTime(now));
  add(root, "status", v("a-status"));
  add(root, "msgType", "Alert");
  add(root, "scope", "Public");
  const info = add(root, "info");
  add(info, "category", v("a-category"));
  add(info, "event", v("a-event"));
  add(info, "responseType", v("a-response"));
  add(info, "urgency", v("a-urgency"));
  add(info, "severity", v("a-severity"));
  add(info, "certainty", v("a-certainty"));
  add(info, "expires", capTime(new Date(now.getTime() + hours * 3600e3)));
  if (state.me.registered) add(info, "senderName", state.me.registered.name);
  if (v("a-headline")) add(info, "headline", v("a-headline"));
  if (v("a-description")) add(info, "description", v("a-description"));
  if (v("a-instruction")) add(info, "instruction", v("a-instruction"));
  const area = add(info, "area");
  add(area, "areaDesc", v("a-area"));
  if (v("a-lat") || v("a-lon")) add(area, "circle", `${v("a-lat")},${v("a-lon")} ${v("a-radius") || "0"}`);
  return `<?xml version="1.0" encoding="UTF-8"?>\n${new XMLSerializer().serializeToString(doc)}\n`;
}

// Under the To field: who that name is on the chain, so people see they
// write to the right one.
async function describeRecipient() {
  const who = $("to").value.trim();
  const out = $("to-who");
  if (!who) { out.textContent = ""; return; }
  try {
    const { identities } = await api("identity?who=" + encodeURIComponent(who));
    if (identities.length === 0) out.textContent = "No one is registered under this name.";
    else if (identities.length > 1) out.textContent = `${identities.length} people have this name: paste the card of the one you mean.`;
    else {
      const i = identities[0];
      const what = [i.authority ? "authority" : "", ...i.roles.map((r) => "certified " + r), i.revoked ? "KEY REVOKED: do not trust" : ""].filter(Boolean);
      out.textContent = `${i.name}: ${what.length ? what.join(", ") : "registered, no certified role"} (${short(i.id)})`;
    }
  } catch (e) { out.textContent = e.message; }
}

// Scanning a card with the camera, where the browser can read QR codes
// itself (BarcodeDetector: Chrome on Android, on this device or over
// HTTPS); elsewhere people paste the text their camera app read.
function wireScan() {
  if (!("BarcodeDetector" in window) || !window.isSecureContext) return;
  const button = $("scan");
  button.hidden = false;
  button.addEventListener("click", async () => {
    const video = $("scan-video");
    const out = $("scan-result");
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    } catch { out.textContent = "No camera for this page; paste the card's text instead."; return; }
    video.srcObject = stream;
    video.hidden = false;
    await video.play();
    const detector = new BarcodeDetector({ formats: ["qr_code"] });
    out.textContent = "Point the camera at their card's QR code…";
    const stop = () => { stream.getTracks().forEach((t) => t.stop()); video.hidden = true; };
    for (let i = 0; i < 300; i++) {
      const codes = await detector.detect(video).catch(() => []);
      const card = codes.map((c) => c.rawValue).find((v) => v.startsWith("lifeline-card:"));
      if (card) { $("card").value = card; out.textContent = "Card read."; stop(); return; }
      await new Promise((r) => setTimeout(r, 200));
    }
    out.textContent = "No card found; paste its text instead.";
    stop();
  });
}

function wireMe() {
  $("register-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const result = $("register-result");
    try {
      const r = await api("register", { name: $("reg-name").value });
      await follow(result, `Registered as ${$("reg-name").value}`, r.hash);
      state.me = await api("me");
      renderMe();
    } catch (err) { result.textContent = err.message; }
  });
}

function wireAuthority() {
  $("cap-file-publish").addEventListener("click", async () => {
    const file = $("cap-file").files[0];
    if (!file) { $("alert-result").textContent = "Choose a CAP file first."; return; }
    if (file.size > 4 * 1024 * 1024) { $("alert-result").textContent = "That file is larger than 4 MiB; lifeline reads CAP files up to 4 MiB."; return; }
    await publishCap(await file.text());
  });
  $("alert-form").addEventListener("submit", (e) => { e.preventDefault(); publishCap(capFromForm()); });
  $("certify-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const result = $("certify-result");
    const until = $("c-until").value;
    if (!until) { result.textContent = "Choose the date the role ends."; return; }
    const [y, m, d] = until.split("-").map(Number);
    try {
      // Through that day: until the next midnight, UTC, as the CLI reads a date.
      const r = await api("authority/certify", { who: $("c-who").value, role: $("c-role").value, expires_ms: Date.UTC(y, m - 1, d + 1) });
      await follow(result, `${$("c-who").value} certified as ${$("c-role").value}`, r.hash);
    } catch (err) { result.textContent = err.message; }
  });
  $("revoke-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const result = $("revoke-result");
    if (!$("r-sure").checked) { result.textContent = "Tick \"I am sure\" first: a revoked key stays revoked."; return; }
    try {
      const r = await api("authority/revoke", { who: $("r-who").value, reason: $("r-reason").value });
      await follow(result, `${$("r-who").value} revoked`, r.hash);
    } catch (err) { result.textContent = err.message; }
  });
  $("vote-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const result = $("vote-result");
    const add = document.querySelector("input[name=v-way]:checked").value === "add";
    try {
      await api("authority/vote", { who: $("v-who").value, authorize: add });
      result.textContent = `Your vote to ${add ? "add" : "drop"} ${$("v-who").value} rides in your next block; it takes effect when more than half of the authorities agree.`;
    } catch (err) { result.textContent = err.message; }
  });
}

const PAGES = {
  messages: () => Promise.all([loadInbox(), loadSent()]),
  sos: () => Promise.all([loadInbox(), loadSent()]),
  alerts: loadAlerts,
  map: loadMap,
  network: loadNetwork,
  me: async () => renderMe(),
  authority: async () => {},
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
  wireAuthority();
  wireMe();
  wireScan();
  $("to").addEventListener("change", describeRecipient);
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
    $("authority-tab").hidden = !state.me.authority;
  } catch (e) { showProblem(e.message); return; }
  listen();
  await show();
}

start();
