// Browser checks of lifeline's web app, run by cli/tests/web.rs against
// real daemons. Exits non-zero on the first failed check; prints figures.
import { chromium } from "playwright-core";
import { strict as assert } from "node:assert";
import path from "node:path";

const { CHROMIUM, ANA_URL, BEA_URL, CIVIL_URL, BEA_CODE, SHOTS, FIRE_FILE, BROKEN_FILE } = process.env;
const SIZES = { phone: { width: 390, height: 844 }, desktop: { width: 1280, height: 860 } };
const LOCAL = new Set(["127.0.0.1", "localhost", "[::1]"]);

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  // No Google services: nothing may leave the machine.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const problems = [];
// Statuses the test provokes on purpose (401: the unpaired browser).
const expected = new Set([401]);
const figures = {};

async function open(name) {
  const context = await browser.newContext({ viewport: SIZES.phone });
  const page = await context.newPage();
  page.on("console", (m) => {
    // Chromium logs every refused request; those the test asks for are fine.
    const status = /status of (\d+)/.exec(m.text());
    if (m.type() === "error" && !(status && expected.has(Number(status[1])))) {
      problems.push(`${name} console: ${m.text()}`);
    }
  });
  page.on("pageerror", (e) => problems.push(`${name} page error: ${e.message}`));
  page.on("request", (r) => {
    const url = new URL(r.url());
    // blob: and data: are the page's own memory (tiles the PMTiles reader
    // unpacked), not the network.
    if (url.protocol === "blob:" || url.protocol === "data:") return;
    if (!LOCAL.has(url.hostname)) problems.push(`${name} requested ${r.url()}`);
  });
  return page;
}

async function shoot(page, name) {
  for (const [size, viewport] of Object.entries(SIZES)) {
    await page.setViewportSize(viewport);
    // Leaflet redraws a quarter second after a resize.
    await page.waitForTimeout(300);
    await page.screenshot({ path: path.join(SHOTS, `${name}-${size}.png`), fullPage: true });
  }
  await page.setViewportSize(SIZES.phone);
}

async function go(page, base, tab) {
  await page.goto(base + "#" + tab);
  await page.locator(`#page-${tab}`).waitFor({ state: "visible" });
}

function check(what, ok) {
  assert.ok(ok, what);
  console.log("ok:", what);
}

// Bea's app is on the LAN: unpaired, it says what to do.
const bea = await open("bea");
const refused = await bea.goto(BEA_URL);
check("an unpaired browser is refused (401)", refused.status() === 401);
check("the refusal says how to pair", (await bea.textContent("body")).includes("lifeline web pair"));
const api = await bea.request.get(BEA_URL + "api/inbox");
check("the API refuses it too", api.status() === 401);
await shoot(bea, "pair");
await bea.fill("#code", "0000-0000-0000");
await bea.click("button[type=submit]");
check("a wrong code is refused with guidance",
  (await bea.textContent(".problem")).includes("wrong, used or expired"));
await bea.fill("#code", BEA_CODE);
await bea.click("button[type=submit]");
await bea.locator("#page-messages").waitFor({ state: "visible" });
check("the right code pairs the browser", true);

// Ana's app on loopback opens at once; time to the inbox's first paint.
const ana = await open("ana");
const t0 = Date.now();
await ana.goto(ANA_URL);
await ana.waitForFunction(() => {
  const list = document.getElementById("inbox");
  return !document.getElementById("page-messages").hidden &&
    (list.children.length > 0 || !document.getElementById("inbox-empty").hidden);
});
figures.inbox_first_paint_ms = Date.now() - t0;
// What the first load of the app moved over the network, and unpacked to.
const loaded = await ana.evaluate(() => [...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")]
  .filter((e) => !e.name.includes("/api/"))
  .map((e) => ({ name: e.name, transfer: e.transferSize, decoded: e.decodedBodySize })));
figures.app_bytes = loaded.reduce((n, e) => n + e.decoded, 0);
figures.app_bytes_transferred = loaded.reduce((n, e) => n + e.transfer, 0);
const leaflet = loaded.find((e) => e.name.endsWith("/lib/leaflet.js"));
check(`the app's files come gzipped (leaflet.js: ${leaflet.transfer} bytes for ${leaflet.decoded})`,
  leaflet.transfer < leaflet.decoded / 2);
await shoot(ana, "messages-empty");

// Ana registers her name from her Me page.
await go(ana, ANA_URL, "me");
await ana.fill("#reg-name", "ana");
await ana.click("#register-form button[type=submit]");
await ana.waitForFunction(() => document.querySelector("#me-facts dd")?.textContent === "ana", null, { timeout: 30000 });
check("ana registers her name from her page", true);
check("the Authority page is not offered on ana's node", await ana.locator("#authority-tab").isHidden());

// Civil, an authority, certifies bea and publishes alerts from its page.
const civil = await open("civil");
await civil.goto(CIVIL_URL);
await civil.locator("#authority-tab").waitFor({ state: "visible" });
check("the Authority page is offered on the authority's node", true);
await go(civil, CIVIL_URL, "authority");
await civil.fill("#c-who", "bea");
await civil.fill("#c-role", "medic");
await civil.fill("#c-until", "2099-01-01");
await civil.click("#certify-form button[type=submit]");
await civil.locator("#certify-result", { hasText: "in block" }).waitFor({ timeout: 30000 });
check("civil certifies bea as a medic from its page", true);
await civil.setInputFiles("#cap-file", BROKEN_FILE);
expected.add(400);
await civil.click("#cap-file-publish");
const broken = civil.locator("#alert-result", { hasText: "<status>" });
await broken.waitFor();
expected.delete(400);
const why = await broken.textContent();
check(`a CAP file that breaks a rule is refused with its line and element (${why})`,
  /line 9, <status>: is "Real"; CAP 1\.2 allows Actual.* \(a CAP 1\.2 rule\)$/.test(why));
await civil.setInputFiles("#cap-file", FIRE_FILE);
await civil.click("#cap-file-publish");
await civil.locator("#alert-result", { hasText: "IPAWS-2036-0042" }).filter({ hasText: "in block" }).waitFor({ timeout: 30000 });
check("a CAP file is published from the page", true);
await civil.fill("#a-event", "Flood");
await civil.fill("#a-headline", "Flood warning for the lower town <east & west>");
await civil.fill("#a-instruction", "Move to the upper floors.");
await civil.fill("#a-area", "Lower town");
await civil.fill("#a-lat", "51.34");
await civil.fill("#a-lon", "12.37");
await civil.fill("#a-radius", "2");
await civil.click("#alert-form button[type=submit]");
await civil.waitForFunction(() => {
  const t = document.getElementById("alert-result").textContent;
  return t.startsWith("Alert lifeline-") && t.includes("in block");
}, null, { timeout: 30000 });
check("an alert written in the page's form is published", true);
await shoot(civil, "authority");

// Ana's chain knows bea's role before bea answers anything.
for (let i = 0; ; i++) {
  const { identities } = await ana.evaluate(() => fetch("/api/identity?who=bea").then((r) => r.json()));
  if (identities.length === 1 && identities[0].roles.includes("medic")) break;
  assert.ok(i < 40, "bea's role did not reach ana's node");
  await ana.waitForTimeout(500);
}

// A message by registered name, from ana's page to bea's.
await go(ana, ANA_URL, "messages");
const text = `water at the school ${Date.now()}`;
await ana.fill("#to", "bea");
await ana.locator("#to").dispatchEvent("change");
await ana.locator("#to-who", { hasText: "certified medic" }).waitFor();
check("the compose form says who bea is on the chain", true);
await ana.fill("#text", text);
await ana.click("#compose button[type=submit]");
const seen = await bea.waitForFunction((t) => {
  const li = [...document.querySelectorAll("#inbox li")].find((l) => l.textContent.includes(t));
  return li ? { at: Date.now(), id: li.dataset.id } : null;
}, text, { polling: "raf", timeout: 20000 }).then((h) => h.jsonValue());
const inbox = await bea.evaluate(() => fetch("/api/inbox").then((r) => r.json()));
const arrived = inbox.messages.find((m) => m.id === seen.id);
check("the message appears in bea's page", Boolean(arrived));
figures.arrival_to_page_ms = seen.at - arrived.received_ms;
const shown = await bea.textContent(`#inbox li[data-id="${seen.id}"]`);
check(`it shows its sender by registered name and its hop count (${shown})`,
  shown.includes("From ana · 1 hop ·"));
await ana.locator("#sent li .status.delivered").first().waitFor({ timeout: 20000 });
check("ana's page shows it delivered", (await ana.textContent("#sent li")).includes("Received by"));
await shoot(ana, "messages");
await shoot(bea, "messages-received");

// An SOS with a position from ana's page; bea answers from hers.
await go(ana, ANA_URL, "sos");
await ana.fill("#sos-text", "water in the cellar, two people");
await ana.fill("#lat", "51.33600");
await ana.fill("#lon", "12.33000");
await ana.click("#sos-send");
await ana.locator("#my-sos li").first().waitFor();
await go(bea, BEA_URL, "sos");
const call = bea.locator("#incoming-sos li", { hasText: "water in the cellar" });
await call.waitFor({ timeout: 20000 });
check("bea's page lists the SOS from ana with its position",
  (await call.textContent()).includes("SOS from ana at 51.33600, 12.33000"));
await shoot(bea, "sos-incoming");
await call.locator("input").fill("two of us, 10 minutes");
await call.locator("button").click();
await call.locator(".result", { hasText: "Acknowledged" }).waitFor();
const coming = ana.locator("#my-sos .coming");
await coming.waitFor({ timeout: 20000 });
const said = await coming.textContent();
check(`ana's page says help is coming from bea, certified medic (${said})`,
  said.includes("Help is coming") && said.includes("bea") && said.includes("certified medic") &&
  said.includes("two of us, 10 minutes"));
await shoot(ana, "sos-help-coming");

// Bea's map: the SOS where it was sent, and the alerts' shapes.
await go(bea, BEA_URL, "map");
const marker = bea.locator("#map path.sos-marker");
await marker.waitFor({ timeout: 20000 });
await bea.locator("#map path.alert-shape").nth(3).waitFor();
const shapes = await bea.locator("#map path.alert-shape").count();
const byCode = await bea.locator("#map path.alert-shape.by-code").count();
check(`bea's map draws the fire alert's two polygons, the flood's circle and, from her node's region shapes, the storm's area given by code (${shapes}, ${byCode} by code)`,
  shapes === 4 && byCode === 1);
check("the map has a scale", await bea.locator(".leaflet-control-scale").isVisible());
const listed = await bea.textContent("#map-list");
check("the map's features are listed for keyboards too",
  listed.includes("SOS at 51.33600, 12.33000") && listed.includes("Extreme alert"));
await bea.locator("#map-list li", { hasText: "SOS at" }).locator("button").click();
await bea.locator(".leaflet-popup-content", { hasText: "water in the cellar" }).waitFor();
await shoot(bea, "map");

// Civil's map draws over its offline tiles.
await go(civil, CIVIL_URL, "map");
await civil.waitForFunction(() =>
  [...document.querySelectorAll("#map .leaflet-tile-pane img")].some((i) => i.complete && i.naturalWidth === 256),
null, { timeout: 20000 }).catch(async (e) => {
  console.log("tile pane:", await civil.innerHTML("#map .leaflet-tile-pane"));
  console.log("problems so far:", problems);
  throw e;
});
check("a map with an offline tile file draws its tiles", true);
await shoot(civil, "map-tiles");

// The authority's alert in ana's Alerts page.
await go(ana, ANA_URL, "alerts");
await ana.locator("#alerts li", { hasText: "winter storm warning" }).waitFor({ timeout: 20000 });
await ana.locator("#alerts li", { hasText: "Flood warning for the lower town <east & west>" }).waitFor({ timeout: 20000 });
check("ana's page shows the authority's alerts, as written", true);
await shoot(ana, "alerts");
await go(ana, ANA_URL, "network");
await ana.locator("#peers tr").first().waitFor();
await shoot(ana, "network");
await go(ana, ANA_URL, "me");
check("ana's page shows her registered name", (await ana.textContent("#me-facts")).includes("ana"));
await ana.waitForFunction(() => document.getElementById("my-card-qr").naturalWidth >= 280);
check("her card shows as a QR code", (await ana.inputValue("#my-card")).startsWith("lifeline-card:"));
await shoot(ana, "me");

// An action without the page's token, as another site would send it.
const forged = (await ana.context().request.post(ANA_URL + "api/sos", { data: { text: "x" } })).status();
check("an action without the CSRF token is refused", forged === 403);

await browser.close();
for (const p of problems) console.log("problem:", p);
check("no request left the machine and no console errors", problems.length === 0);
console.log("figures:", JSON.stringify(figures));
console.log("all browser checks passed");
