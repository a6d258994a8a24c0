// Live updates for the reconciler dashboard: each event names the sections it concerns, and those
// sections are fetched again as server-rendered HTML (/partials/NAME). No framework, no build.
"use strict";

const SECTIONS_FOR = {
  validation_update: ["providers"],
  apply: ["status", "providers", "applies", "drift", "runs", "experiments"],
  drift: ["drift"],
  run: ["runs", "experiments"],
  experiment: ["experiments"],
  database: ["status"],
};

const pending = new Set();
let timer = null;

function schedule(sections) {
  sections.forEach((s) => pending.add(s));
  if (timer === null) {
    timer = setTimeout(flush, 50); // events that arrive together are fetched once
  }
}

async function flush() {
  timer = null;
  const sections = [...pending];
  pending.clear();
  await Promise.all(sections.map(refresh));
}

async function refresh(name) {
  const target = document.getElementById("section-" + name);
  if (!target) return;
  try {
    const response = await fetch("/partials/" + name, { credentials: "same-origin", cache: "no-store" });
    if (!response.ok) throw new Error(response.status + " " + response.statusText);
    target.innerHTML = await response.text();
    target.dataset.updated = String(Date.now());
  } catch (err) {
    target.dataset.error = String(err);
    setLive("error", "update failed: " + err);
  }
}

function setLive(state, text) {
  document.body.dataset.live = state;
  const el = document.getElementById("live");
  if (el) el.textContent = text;
}

function connect() {
  const source = new EventSource("/api/v1/events");
  source.addEventListener("ready", () => setLive("live", "live"));
  source.onerror = () => setLive("reconnecting", "reconnecting…");
  Object.entries(SECTIONS_FOR).forEach(([type, sections]) => {
    source.addEventListener(type, (message) => {
      document.body.dataset.lastEvent = type;
      let data = null;
      try { data = JSON.parse(message.data); } catch (_) { /* keep going: refresh anyway */ }
      if (type === "database" && data) {
        setLive(data.reachable ? "live" : "error", data.reachable ? "live" : "database unreachable");
      }
      schedule(sections);
    });
  });
  // after a reconnect (server restart) the page may have missed events: refresh everything once
  source.addEventListener("open", () => {
    if (document.body.dataset.connectedBefore) schedule(Object.keys(SECTIONS_FOR).flatMap((t) => SECTIONS_FOR[t]));
    document.body.dataset.connectedBefore = "1";
  });
}

connect();
// sections the page was sent without (drift: a full snapshot) are fetched at once
schedule([...document.querySelectorAll("[data-deferred]")].map((el) => el.dataset.section));
