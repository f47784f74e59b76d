"use strict";
// KI_ana web UI: plain JavaScript against the node's REST API, no build step, no CDN.
const $ = (s) => document.querySelector(s);
const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; };
let conversation = null;

async function api(path, options = {}) {
  const r = await fetch(path, { headers: { "Content-Type": "application/json" }, ...options });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((body.error && body.error.message) || r.statusText);
  return body;
}

function show(tab) {
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.id === tab));
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b.dataset.tab === tab));
  if (tab === "knowledge") listItems();
  if (tab === "ledger") ledger();
}
document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => show(b.dataset.tab)));

// Chat: the answer streams in as Server-Sent Events; the final event carries the citations.
$("#ask").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const q = $("#question").value.trim();
  if (!q) return;
  $("#question").value = "";
  $("#messages").append(el("div", "msg user", q));
  const answer = el("div", "msg assistant", "");
  $("#messages").append(answer);
  try {
    const r = await fetch("/api/v1/ask", { method: "POST", headers: { "Content-Type": "application/json" },
                                           body: JSON.stringify({ question: q, conversation }) });
    if (!r.ok) { const b = await r.json().catch(() => ({})); throw new Error((b.error && b.error.message) || r.statusText); }
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const name = (event.match(/^event: (.*)$/m) || [])[1] || "message";
        const data = JSON.parse((event.match(/^data: (.*)$/m) || [])[1] || "{}");
        if (name === "token") answer.firstChild ? (answer.firstChild.textContent += data.text) : answer.append(document.createTextNode(data.text));
        else if (name === "done") { conversation = data.conversation; citations(answer, data.citations || []); }
        else if (data.error) throw new Error(data.error.message || data.error);
      }
    }
  } catch (e) {
    answer.classList.add("error");
    answer.textContent = "Error: " + e.message;
  }
});

function citations(node, list) {
  if (!list.length) return;
  const s = el("div", "sources", "Sources: ");
  for (const c of list) {
    const a = el("a", "citation", "[" + c.number + "] " + (c.title || c.id.slice(0, 8)));
    a.href = "#item-" + c.id;
    a.addEventListener("click", (ev) => { ev.preventDefault(); show("knowledge"); openItem(c.id); });
    s.append(a);
  }
  node.append(s);
}

// Knowledge: list, search, add, forget, open one.
function renderItems(items) {
  const ul = $("#items");
  ul.replaceChildren();
  for (const it of items) {
    const li = el("li");
    const span = el("span", null, (it.title ? it.title + ": " : "") + it.text.slice(0, 160));
    span.addEventListener("click", () => openItem(it.id));
    const forget = el("button", null, "forget");
    forget.title = "Forget this item (a signed tombstone in the ledger)";
    forget.addEventListener("click", async () => { await api("/api/v1/knowledge/" + it.id, { method: "DELETE" }); listItems(); });
    li.append(span, forget);
    ul.append(li);
  }
  if (!items.length) ul.append(el("li", null, "Nothing here yet."));
}
async function listItems() { renderItems((await api("/api/v1/knowledge?limit=200")).items); }
async function openItem(id) {
  const it = await api("/api/v1/knowledge/" + id);
  const box = $("#item");
  box.replaceChildren(el("h3", null, it.title || "Knowledge item"), el("p", null, it.text));
  for (const t of it.tags) box.append(el("span", "tag", t));
  box.append(el("p", "sources", "ID " + it.id + (it.source ? " · " + it.source : "")));
  box.hidden = false;
  box.scrollIntoView({ behavior: "smooth" });
}
$("#add").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const tags = $("#tags").value.split(",").map((t) => t.trim()).filter(Boolean);
  await api("/api/v1/knowledge", { method: "POST", body: JSON.stringify({ text: $("#text").value, tags }) });
  $("#text").value = ""; $("#tags").value = "";
  listItems();
});
$("#find").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const q = $("#query").value.trim();
  if (!q) return listItems();
  renderItems((await api("/api/v1/search?k=20&q=" + encodeURIComponent(q))).hits);
});

// Ledger status.
async function ledger() {
  const s = await api("/api/v1/ledger");
  const h = await api("/health");
  const dl = $("#status");
  dl.replaceChildren();
  for (const [k, v] of [["Device", h.deviceId], ["Height", s.height], ["Head", s.head], ["Knowledge items", s.items]]) {
    dl.append(el("dt", null, k), el("dd", null, String(v)));
  }
}
