"use strict";
// KI_ana web UI: plain JavaScript against the node's REST API (/openapi.json), no build step,
// no CDN. Streams (ask, ingest, live events) are Server-Sent Events read through fetch, so the
// API token works for them too.
const $ = (s) => document.querySelector(s);
const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; };
const short = (hex) => (hex || "").slice(0, 12);
const when = (ms) => (ms ? new Date(ms).toLocaleString() : "");
// seq: the newest list request; an older one that answers late must not replace its result.
// search: the query and mode whose results are shown (a live change runs it again).
const state = { conversation: null, offset: 0, searching: false, search: null, oldest: null, tab: "chat", seq: 0 };

// ---- HTTP ------------------------------------------------------------------------------------
function headers() {
  const h = { "Content-Type": "application/json" };
  const t = localStorage.getItem("kiana-token");
  if (t) h.Authorization = "Bearer " + t;
  return h;
}
async function failure(r) {
  const b = await r.json().catch(() => ({}));
  const e = new Error((b.error && b.error.message) || r.status + " " + r.statusText);
  e.code = b.error && b.error.code; // the node's error code: "exists", "changed", …
  e.status = r.status;
  if (r.status === 401) tokenRefused(e.message);
  return e;
}
// The node wants a token: the prompt shows, and if this browser sent one, the node's word on it
// ("the bearer token is wrong …") stands next to the prompt, not only in the console.
function tokenRefused(message) {
  $("#auth").hidden = false;
  const sent = !!localStorage.getItem("kiana-token");
  let why = $("#auth-error");
  if (!why) {
    why = el("p", null);
    why.id = "auth-error";
    why.setAttribute("role", "alert");
    $("#token-form").after(why);
  }
  why.textContent = sent ? "The token this browser sent was refused: " + message : "";
  why.hidden = !sent;
  $("#auth").classList.toggle("error", sent);
}
async function api(path, options = {}) {
  const r = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (!r.ok) throw await failure(r);
  return r.json();
}
// POST/GET a Server-Sent Events stream; onEvent(name, data, id) for each event. Resolves at
// its end; if onEvent throws, the stream is cancelled and the error passed on.
async function sse(path, options, onEvent) {
  const r = await fetch(path, { ...options, headers: headers() });
  if (!r.ok) throw await failure(r);
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (!data) continue; // comments (keep-alives)
        const name = (block.match(/^event: (.*)$/m) || [])[1] || "message";
        const id = (block.match(/^id: (.*)$/m) || [])[1];
        onEvent(name, JSON.parse(data), id);
      }
    }
  } catch (e) {
    reader.cancel().catch(() => {});
    throw e;
  }
}
function notice(text, error) {
  const n = $("#notice");
  n.textContent = text;
  n.classList.toggle("error", !!error);
  n.hidden = false;
  clearTimeout(notice.timer);
  notice.timer = setTimeout(() => { n.hidden = true; }, error ? 8000 : 3000);
}
// Runs an async UI action and shows its error instead of failing silently.
const guarded = (f) => async (...args) => { try { await f(...args); } catch (e) { notice(e.message, true); } };
const tags = (s) => s.split(",").map((t) => t.trim()).filter(Boolean);

$("#token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  localStorage.setItem("kiana-token", $("#token").value.trim());
  $("#auth").hidden = true;
  location.reload();
});
// A token kept in this browser can be forgotten (a shared computer, a token that was rotated).
function tokenButton() { $("#forget-token").hidden = !localStorage.getItem("kiana-token"); }
$("#forget-token").addEventListener("click", () => {
  localStorage.removeItem("kiana-token");
  tokenButton();
  notice("The API token is no longer kept in this browser.");
});
tokenButton();

// ---- tabs ------------------------------------------------------------------------------------
// The address says what is shown, so a reload or a bookmark comes back to it: #knowledge,
// #ledger, #device, #chat or #chat/<conversation>, #item-<id>.
function place(hash) { if (location.hash !== hash) history.replaceState(null, "", hash); }
function chatPlace() { place("#chat" + (state.conversation ? "/" + state.conversation : "")); }
function show(tab) {
  state.tab = tab;
  if (tab === "chat") chatPlace(); else place("#" + tab);
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.id === tab));
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b.dataset.tab === tab));
  // What a tab loads fails visibly; a refused token is shown at the token prompt instead.
  const load = (f) => f().catch((e) => { if (e.status !== 401) notice(e.message, true); });
  if (tab === "knowledge" && !state.searching) load(listItems);
  if (tab === "ledger") { load(ledgerStatus); load(blocks); }
  if (tab === "device") load(device);
  if (tab === "chat") load(conversations);
}
document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", guarded(() => show(b.dataset.tab))));

// ---- chat ------------------------------------------------------------------------------------
function message(role, text, cites, quotes) {
  const m = el("div", "msg " + role);
  m.append(el("span", "text", text));
  if (quotes) support(m, quotes);
  if (cites) citations(m, cites);
  if (role === "assistant") readAloudButton(m); // a finished answer (from the history)
  $("#messages").append(m);
  return m;
}
// The source sentences that back an answer, under it, so the owner can check it at a glance.
function support(node, list) {
  if (!list.length) return;
  const s = el("div", "support");
  for (const x of list) {
    const q = el("blockquote", null, "“" + x.text + "” ");
    q.append(el("span", "number", "[" + x.number + "]"));
    s.append(q);
  }
  node.append(s);
}
function citations(node, list) {
  if (!list.length) return;
  const s = el("div", "sources", "Sources: ");
  for (const c of list) {
    const id = c.id || c;
    const a = el("a", "citation", c.number ? "[" + c.number + "] " + (c.title || short(id)) : short(id));
    a.href = "#item-" + id;
    a.dataset.id = id;
    a.addEventListener("click", guarded(async (ev) => { ev.preventDefault(); show("knowledge"); await openItem(id); }));
    s.append(a);
  }
  node.append(s);
}
// The Send button is disabled while an answer streams: one question at a time.
const asking = () => $("#ask [type=submit]").disabled;
$("#ask").addEventListener("submit", guarded(async (ev) => {
  ev.preventDefault();
  const q = $("#question").value.trim();
  if (!q) return;
  $("#question").value = "";
  voiceMessage(); // the last voice message was about an earlier question
  // One question at a time: the next one belongs to the conversation this one creates.
  // The conversation cannot change under a pending answer (it would land in the other one).
  $("#ask [type=submit]").disabled = true;
  $("#conversations").disabled = true;
  message("user", q);
  const answer = message("assistant pending", "");
  answer.scrollIntoView({ block: "nearest" });
  const text = answer.querySelector(".text");
  // Auto read-aloud speaks each sentence as soon as it is complete, while the rest streams.
  const reader = $("#autoread").checked && voice.speech ? follower(q) : null;
  let finished = false; // the `done` event came: the answer is whole, checked and cited
  try {
    await sse("/api/v1/ask", { method: "POST", body: JSON.stringify({ question: q, conversation: state.conversation }) }, (name, data) => {
      if (name === "token") {
        text.textContent += data.text;
        if (reader) reader.grow(text.textContent);
        $("#ask").scrollIntoView({ block: "nearest" }); // the answer grows above the question box
      } else if (name === "done") {
        finished = true;
        answer.classList.remove("pending");
        state.conversation = data.conversation;
        if (state.tab === "chat") chatPlace();
        if (data.abstained) answer.classList.add("abstained");
        support(answer, data.support || []);
        citations(answer, data.citations || []);
        const button = readAloudButton(answer);
        if (reader) reader.end(text.textContent, button);
      } else if (name === "error") throw new Error(data.message);
    });
    // The stream ended without `done` (the node restarted, a proxy cut the connection): what
    // arrived is kept, but marked as cut off, never shown as a finished answer.
    if (!finished) interrupted(answer);
  } catch (e) {
    if (reader) reader.speaker.stop();
    if (!finished && e instanceof TypeError && text.textContent) {
      interrupted(answer); // the connection broke mid-answer (a network error, not the node's `error`)
    } else {
      answer.classList.add("error");
      text.textContent = "Error: " + e.message;
    }
  } finally {
    if (reader && !reader.ended) reader.speaker.stop(); // the stream ended without its answer
    answer.classList.remove("pending");
    $("#ask [type=submit]").disabled = false;
    $("#conversations").disabled = false;
    $("#ask").scrollIntoView({ block: "nearest" });
  }
  await conversations();
}));
function interrupted(answer) {
  answer.classList.add("error", "interrupted");
  answer.append(el("p", "cut", (answer.querySelector(".text").textContent ? "This answer was cut off: " : "No answer arrived: ") +
    "the connection to the node ended before it was finished. Ask again to get the whole answer, checked and with its sources."));
}
async function conversations() {
  const list = (await api("/api/v1/conversations")).conversations;
  const sel = $("#conversations");
  sel.replaceChildren(el("option", null, "New conversation"));
  sel.firstChild.value = "";
  for (const c of list) {
    const o = el("option", null, (c.title || "Conversation") + " · " + when(c.updated));
    o.value = c.id;
    sel.append(o);
  }
  sel.value = state.conversation || "";
}
$("#conversations").addEventListener("change", guarded(() => openConversation($("#conversations").value || null)));
async function openConversation(id) {
  state.conversation = id;
  chatPlace();
  stopSpeaking();
  $("#messages").replaceChildren();
  if (!id) return;
  try {
    for (const m of (await api("/api/v1/conversations/" + id)).messages) {
      // As it was shown: supporting sentences and numbered citations (IDs for older turns).
      const node = message(m.role, m.content, (m.cited || []).length ? m.cited : m.citations, m.support);
      if (m.abstained) node.classList.add("abstained");
    }
  } catch (e) {
    // A stale bookmark or a conversation deleted elsewhere: start a new one instead.
    state.conversation = null;
    chatPlace();
    $("#conversations").value = "";
    throw e;
  }
}

// ---- voice -----------------------------------------------------------------------------------
// Speech in: push-to-talk records the microphone, the node transcribes it (POST
// /api/v1/voice/transcribe, a WAV) and the text is asked like a typed question. Speech out: answers
// are read aloud sentence by sentence (POST /api/v1/voice/speak → WAV → <audio> from a blob: URL).
// The microphone is read by an AudioWorklet (/ui/recorder.js, same origin as the page's CSP
// requires) on the audio thread, so a busy page cannot garble the recording.
// note: what stays under the question box when no voice message is due (what is not installed).
const voice = { loaded: false, speech: false, recognition: false, hint: "", note: "", maxSeconds: 60, rec: null, press: null, speaker: null };
const HOLD_MS = 400; // a press held longer is push-to-talk (release sends); a shorter one toggles
const MAX_RATE = 96000; // the node takes 8–96 kHz; faster sound cards are thinned out here

async function voiceStatus() {
  let s;
  try {
    s = await api("/api/v1/voice");
  } catch (e) {
    return; // a node without voice (or not reachable yet): the controls stay hidden
  }
  const has = (kind) => s.engines.some((e) => e.kind === kind && e.installed);
  Object.assign(voice, { loaded: true, speech: has("speech"), recognition: has("recognition"), hint: s.install || "" });
  voice.maxSeconds = s.maxSeconds || 60; // the node's limit (voice.maxSeconds in its settings)
  voiceControls();
}
// Shows the controls; those whose engine is missing (or, for the microphone, a page that is not a
// secure context, where browsers hide getUserMedia) are disabled, and say why and what to install.
function voiceControls() {
  const install = voice.hint ? " Install on the node with: " + voice.hint : "";
  const mic = !!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
  const why = !voice.recognition ? "Speech recognition is not installed on this node." + install
    : !mic ? "The browser allows the microphone only on a secure page: open this UI as http://127.0.0.1 or over https." : "";
  offer($("#talk"), !why, why || "Hold to talk, or click to start and click again to send");
  offer($("#autoread-label"), voice.speech, voice.speech ? "Speak every new answer, sentence by sentence, as it arrives" : "Speech output is not installed on this node." + install);
  $("#autoread").disabled = !voice.speech;
  document.querySelectorAll(".read-aloud").forEach((b) => offerSpeech(b));
  voice.note = !voice.speech && !voice.recognition ? "Voice input and output are not installed on this node." + install
    : why || (voice.speech ? "" : "Speech output is not installed on this node." + install);
  voiceMessage();
}
function offer(node, ok, title) {
  node.hidden = !voice.loaded;
  if ("disabled" in node) node.disabled = !ok; // (a <label> has none: its checkbox is disabled apart)
  node.classList.toggle("unavailable", !ok);
  node.title = title;
}
const offerSpeech = (b) => offer(b, voice.speech, voice.speech ? "Read this answer aloud" : "Speech output is not installed on this node." +
  (voice.hint ? " Install on the node with: " + voice.hint : ""));
// Voice states and errors, next to the question box (the top banner may be scrolled away);
// without text, the standing note (if any) again.
function voiceMessage(text, error) {
  const p = $("#voice-status");
  p.textContent = text || voice.note;
  p.hidden = !p.textContent;
  p.classList.toggle("error", !!error);
}

// ---- push-to-talk
function showTalk() {
  const r = voice.rec, b = $("#talk");
  b.setAttribute("aria-pressed", String(!!r && r.state !== "transcribing"));
  b.classList.toggle("busy", !!r && r.state === "transcribing");
  const seconds = r && r.rate ? Math.floor(r.samples / r.rate) : 0;
  b.querySelector(".label").textContent = !r ? "Talk" : r.state === "transcribing" ? "Transcribing…" : "Listening " + seconds + " s";
}
$("#talk").addEventListener("pointerdown", (ev) => {
  if (ev.button !== 0) return;
  try { $("#talk").setPointerCapture(ev.pointerId); } catch (e) { /* a synthetic event: no pointer to capture */ } // the release counts even off the button
  const r = voice.rec;
  if (!r) {
    voice.press = performance.now();
    startRecording();
  } else if (r.state !== "transcribing") {
    voice.press = null; // the second click of click-to-toggle
    stopRecording();
  }
});
function talkReleased() {
  // A hold ends the recording on release; a release while the microphone is still opening (a slow
  // device, a busy machine) could not have been spoken into, so it counts as a click: recording goes on.
  const held = voice.press !== null && performance.now() - voice.press >= HOLD_MS;
  if (held && voice.rec && voice.rec.state !== "starting") stopRecording();
  voice.press = null;
}
$("#talk").addEventListener("pointerup", talkReleased);
$("#talk").addEventListener("pointercancel", talkReleased);
$("#talk").addEventListener("contextmenu", (ev) => ev.preventDefault()); // a long touch is a hold, not a menu
// Enter/Space (and assistive technology) click without a pointer (detail 0): toggle.
$("#talk").addEventListener("click", (ev) => {
  if (ev.detail !== 0) return; // a pointer click: handled by pointerdown/up above
  if (!voice.rec) startRecording();
  else stopRecording();
});
function microphoneError(e) {
  if (e.name === "NotAllowedError" || e.name === "SecurityError") return "Microphone access was denied. Allow it for this page in the browser's site settings, then try again.";
  if (e.name === "NotFoundError" || e.name === "OverconstrainedError") return "No microphone was found.";
  if (e.name === "NotReadableError") return "The microphone cannot be opened (is another program using it?).";
  return "The microphone failed: " + e.message;
}
async function startRecording() {
  const r = { state: "starting", chunks: [], samples: 0, rate: 0, stopWanted: false };
  voice.rec = r;
  stopSpeaking(); // not into the microphone
  voiceMessage("Starting the microphone…");
  showTalk();
  try {
    r.context = new AudioContext(); // created during the press, so it may start without a prompt
    r.stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    await r.context.resume();
    r.rate = r.context.sampleRate;
    r.source = r.context.createMediaStreamSource(r.stream);
    await r.context.audioWorklet.addModule("/ui/recorder.js");
    // One input channel, explicitly: several microphone channels are mixed to one by the graph.
    r.node = new AudioWorkletNode(r.context, "kiana-recorder", { numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1], channelCount: 1, channelCountMode: "explicit" });
    r.node.port.onmessage = (e) => captured(r, e.data);
    r.source.connect(r.node);
    r.node.connect(r.context.destination); // pulled by the destination; its output is silence
  } catch (e) {
    release(r);
    voice.rec = null;
    showTalk();
    voiceMessage(microphoneError(e), true);
    return;
  }
  r.state = "recording";
  voiceMessage("Listening… release Talk (or press it again) to send; at most " + voice.maxSeconds + " s.");
  if (r.stopWanted) stopRecording(); // released while the microphone was still opening
}
function captured(r, samples) {
  if (r.state !== "recording") return;
  r.chunks.push(samples); // each chunk is the worklet's own, transferred to the page
  const before = Math.floor(r.samples / r.rate);
  r.samples += samples.length;
  if (Math.floor(r.samples / r.rate) !== before) showTalk();
  if (r.samples >= voice.maxSeconds * r.rate) stopRecording(); // recordings are bounded
}
// Lets go of the microphone (the browser's recording indicator goes off).
function release(r) {
  if (r.node) { r.node.port.onmessage = null; r.node.disconnect(); }
  if (r.source) r.source.disconnect();
  if (r.stream) r.stream.getTracks().forEach((t) => t.stop());
  if (r.context) r.context.close().catch(() => {});
}
async function stopRecording() {
  const r = voice.rec;
  if (!r) return;
  if (r.state === "starting") { r.stopWanted = true; return; }
  if (r.state !== "recording") return;
  r.state = "transcribing";
  release(r);
  showTalk();
  try {
    if (r.samples < r.rate / 4) {
      voiceMessage("That was too short. Hold the button while you speak, or click once to start and again to send.", true);
      return;
    }
    voiceMessage("Transcribing…");
    const heard = await transcribe(wavFile(joined(r.chunks, r.samples), r.rate));
    const text = (heard.text || "").trim();
    if (!text) {
      voiceMessage("Nothing was recognised. Try again, speaking clearly and close to the microphone.", true);
      return;
    }
    $("#question").value = text;
    if (asking()) {
      voiceMessage("Heard “" + text + "”. Press Send when the answer above is complete.");
      return;
    }
    $("#ask").requestSubmit(); // exactly as if it had been typed
    voiceMessage("Heard “" + text + "”.");
  } catch (e) {
    voiceMessage("Transcription failed: " + e.message, true);
  } finally {
    voice.rec = null;
    showTalk();
  }
}
function joined(chunks, length) {
  const all = new Float32Array(length);
  let at = 0;
  for (const c of chunks) { all.set(c, at); at += c.length; }
  return all;
}
async function transcribe(wav) {
  const r = await fetch("/api/v1/voice/transcribe", { method: "POST", headers: { ...headers(), "Content-Type": "audio/wav" }, body: wav });
  if (!r.ok) throw await failure(r);
  return r.json();
}
// A 16-bit mono PCM WAV file: the 44-byte RIFF header, then the samples, little-endian. Rates
// above what the node takes are reduced by averaging neighbours; the node resamples the rest.
function wavFile(samples, rate) {
  const step = Math.ceil(rate / MAX_RATE);
  const n = Math.floor(samples.length / step);
  const buffer = new ArrayBuffer(44 + n * 2), v = new DataView(buffer);
  const ascii = (at, s) => { for (let i = 0; i < s.length; i++) v.setUint8(at + i, s.charCodeAt(i)); };
  ascii(0, "RIFF"); v.setUint32(4, 36 + n * 2, true); ascii(8, "WAVE");
  ascii(12, "fmt "); v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true); // PCM, mono
  v.setUint32(24, Math.round(rate / step), true); v.setUint32(28, Math.round(rate / step) * 2, true); v.setUint16(32, 2, true); v.setUint16(34, 16, true);
  ascii(36, "data"); v.setUint32(40, n * 2, true);
  for (let i = 0; i < n; i++) {
    let x = 0;
    for (let j = 0; j < step; j++) x += samples[i * step + j];
    x = Math.max(-1, Math.min(1, x / step));
    v.setInt16(44 + i * 2, x < 0 ? x * 0x8000 : x * 0x7fff, true);
  }
  return new Blob([buffer], { type: "audio/wav" });
}

// ---- read aloud
// The finished sentences at the start of text: each ends at . ! or ? (also "?!", "...", a closing
// quote or bracket) followed by white space. Returns them and the unfinished rest.
function sentences(text) {
  const done = [];
  let at = 0;
  for (const m of text.matchAll(/[.!?]+["'”’)]*\s+/g)) {
    done.push(text.slice(at, m.index + m[0].length));
    at = m.index + m[0].length;
  }
  return { done, rest: text.slice(at) };
}
// What is said of a sentence: the answer's citation marks ([1], [2, 3]) are for reading, not hearing.
const speakable = (s) => s.replace(/\[\d+(?:\s*[,–-]\s*\d+)*\]/g, "").replace(/\s+/g, " ").trim();

// The language an answer is read in, decided once for the whole answer (or its question): a short
// sentence alone ("Hallo!") could pass for either, and the voice must not switch mid-answer. The
// same scoring as the node's detector (KianaAI Language.detect: markers count 2, other function
// words 1, an umlaut 1), with its word lists.
const germanMarkers = new Set("wann wie wo wer was welche welcher welches wieviel wohin woher warum ist sind und der die das ich mein meine meiner meinem unser unsere nicht wird werden haben hat den dem ein eine einen für mit bei auf".split(" "));
const englishMarkers = new Set("when how where who what which why is are and the my our does do did of to for with at on was were has have it that".split(" "));
const germanStop = new Set("der die das den dem des ein eine einen einem einer eines und oder aber wenn dann als wie so auch nur noch schon sehr ja ist sind war waren sein bin bist hat haben hatte hatten wird werden wurde kann können muss müssen soll sollen darf ich mich mir mein meine meinen meinem meiner meines wir uns unser unsere unseren unserem unserer du dich dir dein deine er sie es ihm ihn ihr ihre ihren ihrem man sich was wer wen wem wo wann warum welche welcher welches welchen im in an am auf aus bei mit nach von vom zu zum zur für über unter vor um bis durch gegen ohne da dort hier dass daß es gibt".split(" "));
const englishStop = new Set("a an the and or but if of to in on at by for with from as into about over after before than then so too very also just only yes is are was were be been being am has have had do does did can could will would shall should may might must it its this that these those there here i me my mine we us our ours you your yours he him his she her hers they them their theirs what which who whom whose when where why how s t all any some each every one ones get gets got".split(" "));
function languageOf(text) {
  let de = 0, en = 0;
  for (const w of text.toLowerCase().match(/[\p{L}\p{N}]+/gu) || []) {
    if (germanMarkers.has(w)) de += 2; else if (germanStop.has(w)) de += 1;
    if (englishMarkers.has(w)) en += 2; else if (englishStop.has(w)) en += 1;
    if (/[äöüß]/.test(w)) de += 1;
  }
  return de > en ? "de" : "en";
}

async function synthesize(text, language, signal) {
  const r = await fetch("/api/v1/voice/speak", { method: "POST", headers: headers(), body: JSON.stringify({ text, language, stream: false }), signal });
  if (!r.ok) throw await failure(r);
  return r.blob();
}
// Plays one WAV; resolves when it ends or is stopped (speaker.halt).
function play(blob, speaker) {
  return new Promise((resolve, reject) => {
    const url = URL.createObjectURL(blob);
    const audio = new Audio(url);
    const finish = (error) => {
      speaker.halt = null;
      audio.onended = audio.onerror = null;
      audio.pause();
      URL.revokeObjectURL(url);
      if (error) reject(error); else resolve();
    };
    audio.onended = () => finish();
    audio.onerror = () => finish(new Error("this browser cannot play the audio"));
    speaker.halt = () => finish();
    audio.play().catch((e) => finish(e.name === "NotAllowedError" ? new Error("the browser blocked playback; press Read aloud") : e));
  });
}
// A queue of sentences spoken in order. Each is synthesized as soon as the one before it is (the
// node has one voice worker, so asking for all at once would not be faster) and played as soon as
// the one before it has finished playing: the first sentence plays while the rest are made.
// One speaker at a time: a new one silences the last.
function speaker(language) {
  stopSpeaking();
  const control = new AbortController();
  let made = Promise.resolve(), played = Promise.resolve();
  const s = { stopped: false, halt: null, button: null };
  const fail = (e) => { if (!s.stopped) { s.stop(); voiceMessage("Reading aloud failed: " + e.message, true); } };
  s.say = (sentence) => {
    const text = speakable(sentence);
    if (s.stopped || !/[\p{L}\p{N}]/u.test(text)) return;
    const wav = made.then(() => (s.stopped ? null : synthesize(text, language, control.signal)));
    made = wav.catch(fail);
    played = played.then(() => wav).then((blob) => (blob && !s.stopped ? play(blob, s) : null)).catch(fail);
  };
  s.end = () => { played.then(() => s.stop()); };
  s.stop = () => {
    if (s.stopped) return;
    s.stopped = true;
    control.abort();
    if (s.halt) s.halt();
    if (voice.speaker === s) voice.speaker = null;
    s.attach(null);
  };
  // The answer's Read aloud button shows (and stops) what is being read.
  s.attach = (b) => {
    if (s.button) readAloudPressed(s.button, false);
    s.button = b;
    if (b) readAloudPressed(b, true);
  };
  voice.speaker = s;
  return s;
}
function stopSpeaking() {
  if (voice.speaker) voice.speaker.stop();
}
function readAloudPressed(b, on) {
  b.setAttribute("aria-pressed", String(on));
  b.textContent = on ? "Stop reading" : "Read aloud";
}
function readAloudButton(answer) {
  const b = el("button", "read-aloud secondary", "Read aloud");
  b.type = "button";
  b.setAttribute("aria-pressed", "false");
  offerSpeech(b);
  b.addEventListener("click", () => {
    if (voice.speaker && voice.speaker.button === b) return stopSpeaking();
    const whole = answer.querySelector(".text").textContent;
    const s = speaker(languageOf(whole));
    s.attach(b);
    const { done, rest } = sentences(whole);
    for (const x of [...done, rest]) s.say(x);
    s.end();
  });
  answer.append(b);
  return b;
}
// Auto read-aloud of an answer while it streams: each sentence is queued once it is complete, the
// unfinished rest when the answer is.
function follower(question) {
  // An answer is in its question's language.
  const f = { speaker: speaker(languageOf(question)), at: 0, ended: false };
  f.speaker.auto = true;
  f.grow = (text) => {
    for (const x of sentences(text.slice(f.at)).done) { f.speaker.say(x); f.at += x.length; }
  };
  f.end = (text, button) => {
    f.grow(text);
    f.speaker.say(text.slice(f.at));
    f.ended = true;
    if (!f.speaker.stopped) f.speaker.attach(button);
    f.speaker.end();
  };
  return f;
}
$("#autoread").checked = localStorage.getItem("kiana-autoread") === "1";
$("#autoread").addEventListener("change", () => {
  localStorage.setItem("kiana-autoread", $("#autoread").checked ? "1" : "0");
  if (!$("#autoread").checked && voice.speaker && voice.speaker.auto) stopSpeaking();
});

// ---- knowledge -------------------------------------------------------------------------------
// A row that opens something: reachable with Tab and opened with Enter or Space, as a button is.
function opens(node, action) {
  node.tabIndex = 0;
  node.setAttribute("role", "button");
  node.addEventListener("click", action);
  node.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); action(ev); }
  });
}
function renderItems(items, append) {
  const ul = $("#items");
  // A live refresh re-renders the rows: the one that had the keyboard focus keeps it.
  const had = ul.contains(document.activeElement) && document.activeElement.closest("li[data-id]");
  const focus = had && { id: had.dataset.id, forget: document.activeElement.tagName === "BUTTON" };
  if (!append) ul.replaceChildren();
  for (const it of items) {
    const li = el("li");
    li.dataset.id = it.id;
    const span = el("span", "grow", (it.title ? it.title + ": " : "") + (it.text.length > 160 ? it.text.slice(0, 159) + "…" : it.text));
    opens(span, guarded(() => openItem(it.id)));
    const forget = el("button", "danger", "forget");
    forget.setAttribute("aria-label", "Forget " + (it.title || it.text.slice(0, 40)));
    forget.title = "Forget this item (a signed tombstone in the ledger)";
    forget.addEventListener("click", guarded(async () => {
      if (!confirm("Forget this item? The ledger keeps a signed record that it was forgotten.")) return;
      try {
        await api("/api/v1/knowledge/" + it.id, { method: "DELETE" });
      } catch (e) {
        // Forgotten meanwhile (another tab, device or the CLI): what the owner asked for is done.
        if (!(e.code === "invalid-input" && /already forgotten/.test(e.message))) throw e;
      }
      li.remove();
      if (state.searching && state.search) {
        state.search.count = Math.max(0, state.search.count - 1);
        hitCount();
      }
      notice("Forgotten.");
      if (state.searching) await refreshSearch(); else await listItems();
    }));
    li.append(span, forget);
    ul.append(li);
  }
  if (!ul.children.length) ul.append(el("li", "muted", "Nothing here yet."));
  const again = focus && [...ul.children].find((li) => li.dataset.id === focus.id);
  if (again) again.querySelector(focus.forget ? "button" : ".grow").focus();
}
async function listItems(more) {
  const seq = ++state.seq;
  state.searching = false;
  const offset = more ? state.offset + 100 : 0;
  const r = await api("/api/v1/knowledge?limit=100&offset=" + offset);
  if (seq !== state.seq) return;
  state.offset = offset;
  renderItems(r.items, more);
  $("#count").textContent = r.total + " item" + (r.total === 1 ? "" : "s");
  $("#more").hidden = state.offset + r.items.length >= r.total;
}
$("#more").addEventListener("click", guarded(() => listItems(true)));
// A change elsewhere (live event) re-reads the pages already shown instead of going back to the
// first one: the rows the owner paged to stay (up to the API's 1,000 per request).
async function refreshItems() {
  const shown = Math.min(state.offset + 100, 1000);
  const seq = ++state.seq;
  const r = await api("/api/v1/knowledge?limit=" + shown + "&offset=0");
  if (seq !== state.seq || state.searching) return;
  state.offset = Math.max(0, shown - 100);
  renderItems(r.items, false);
  $("#count").textContent = r.total + " item" + (r.total === 1 ? "" : "s");
  $("#more").hidden = r.items.length >= r.total;
}
async function openItem(id) {
  const it = await api("/api/v1/knowledge/" + id);
  const box = $("#item");
  box.replaceChildren();
  box.dataset.id = it.id;
  box.append(el("h3", null, (it.title || "Knowledge item") + (it.deleted ? " (forgotten)" : "")), el("p", "body", it.text));
  if (it.deleted) box.append(el("p", "muted", "This item was forgotten: the ledger keeps the record, answers no longer use it. Teach it again to bring it back."));
  for (const t of it.tags) box.append(el("span", "tag", t));
  box.append(el("p", "muted", "ID " + it.id + (it.source ? " · " + it.source : "") + " · changed " + when(it.updated)));
  const edit = el("button", null, "Edit");
  const proof = el("button", "secondary", "Proof");
  const close = el("button", "secondary", "Close");
  edit.addEventListener("click", () => editItem(it));
  proof.addEventListener("click", guarded(async () => { show("ledger"); $("#proof-id").value = it.id; await prove(it.id); }));
  close.addEventListener("click", () => { box.hidden = true; place("#knowledge"); });
  const row = el("div", "row");
  if (!it.deleted) row.append(edit);
  row.append(proof, close);
  box.append(row);
  box.hidden = false;
  place("#item-" + it.id);
  box.scrollIntoView({ behavior: "smooth", block: "nearest" });
}
function editItem(it) {
  const box = $("#item");
  const form = el("form", "edit");
  const title = el("input"); title.value = it.title || ""; title.placeholder = "title";
  const text = el("textarea"); text.value = it.text; text.rows = 6; text.required = true;
  const shownTags = it.tags.join(", ");
  const tagInput = el("input"); tagInput.value = shownTags; tagInput.placeholder = "tags, comma separated";
  const save = el("button", null, "Save");
  const cancel = el("button", "secondary", "Cancel"); cancel.type = "button";
  form.append(title, text, tagInput, save, cancel);
  cancel.addEventListener("click", guarded(() => openItem(it.id)));
  form.addEventListener("submit", guarded(async (ev) => {
    ev.preventDefault();
    // Only what the owner changed is sent: a field left alone stays exactly as stored (a title
    // the item does not have stays absent; tags, which may hold commas or spaces the comma
    // separated field cannot show, are not re-split).
    const body = {};
    // (Compared as the node stores them: text trimmed, and a text box reads line breaks as \n.)
    if (text.value.trim() !== it.text.replace(/\r\n?/g, "\n").trim()) body.text = text.value;
    if (title.value.trim() !== (it.title || "").trim()) body.title = title.value.trim();
    if (tagInput.value !== shownTags) {
      const typed = tags(tagInput.value);
      if (JSON.stringify(typed) !== JSON.stringify(it.tags)) body.tags = typed;
    }
    if (!Object.keys(body).length) {
      notice("Nothing changed.");
      await openItem(it.id);
      return;
    }
    // Sent with the version this form was opened on: a change made meanwhile (another tab or
    // device) is refused (412), and this form stays as it is so nothing typed is lost.
    try {
      await api("/api/v1/knowledge/" + it.id, {
        method: "PUT", headers: it.entry ? { "If-Match": '"' + it.entry + '"' } : {},
        body: JSON.stringify(body),
      });
    } catch (e) {
      if (e.code !== "changed") throw e;
      throw new Error("Not saved: this item was changed elsewhere since you opened it. Your text is still here; copy it, press Cancel to see the new version, and edit that.");
    }
    notice("Saved.");
    await openItem(it.id);
    if (state.searching) await refreshSearch(); else listItems();
  }));
  box.replaceChildren(form);
}
$("#add").addEventListener("submit", guarded(async (ev) => {
  ev.preventDefault();
  const body = { text: $("#text").value, tags: tags($("#tags").value) };
  if ($("#title").value.trim()) body.title = $("#title").value.trim();
  await api("/api/v1/knowledge", { method: "POST", body: JSON.stringify(body) });
  $("#text").value = ""; $("#title").value = ""; $("#tags").value = "";
  notice("Learned.");
  listItems();
}));
$("#find").addEventListener("submit", guarded(async (ev) => {
  ev.preventDefault();
  const q = $("#query").value.trim();
  if (!q) return listItems();
  await search(q, $("#mode").value);
}));
async function search(q, mode) {
  const seq = ++state.seq;
  state.searching = true;
  state.search = { q, mode, count: 0 };
  const hits = (await api("/api/v1/search?k=20&mode=" + mode + "&q=" + encodeURIComponent(q))).hits;
  if (seq !== state.seq || !state.searching) return;
  renderItems(hits);
  state.search.count = hits.length;
  hitCount();
  $("#more").hidden = true;
}
function hitCount() {
  const { q, count } = state.search;
  $("#count").textContent = count + " hit" + (count === 1 ? "" : "s") + " for “" + q + "”";
}
// An edit or forget made elsewhere (live event) runs the shown search again, so no row shows
// old text or an item that is gone.
async function refreshSearch() {
  if (state.searching && state.search) await search(state.search.q, state.search.mode);
}

// Ingest: files are read in the browser and sent as base64; progress streams back.
// Files go to the node as their bytes (base64), which decodes them as `kiana ingest` does:
// UTF-8, UTF-16 with a byte-order mark, and bytes that are not UTF-8 as Windows-1252.
const INGEST_TYPES = /\.(md|markdown|txt|text|html?|pdf)$/i;
const INGEST_MAX = 23 << 20; // base64 makes 4 bytes of 3: just under the node's 32 MiB per request
function readFile(f) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onerror = () => reject(new Error("cannot read " + f.name));
    r.onload = () => resolve({ name: f.name, base64: r.result.slice(r.result.indexOf(",") + 1) });
    r.readAsDataURL(f);
  });
}
$("#ingest").addEventListener("submit", guarded(async (ev) => {
  ev.preventDefault();
  const files = [...$("#files").files];
  if (!files.length) throw new Error("Choose one or more files first.");
  // Checked here, so one wrong file does not cost the upload of all the others.
  const wrong = files.filter((f) => !INGEST_TYPES.test(f.name)).map((f) => f.name);
  if (wrong.length) throw new Error("Not a Markdown, text, HTML or PDF file: " + wrong.join(", ") + ". Leave it out and try again.");
  const size = files.reduce((n, f) => n + f.size, 0);
  if (size > INGEST_MAX) throw new Error("These files hold " + Math.round(size / 1048576) + " MB; send at most 23 MB at a time (or run `kiana ingest FOLDER` on the node).");
  const button = $("#ingest [type=submit]"), bar = $("#ingest-progress"), label = $("#ingest-text");
  button.disabled = true;
  $("#ingest-status").hidden = false;
  bar.removeAttribute("value");
  label.textContent = "Reading " + files.length + " file(s)…";
  try {
    const body = { files: await Promise.all(files.map(readFile)), tags: tags($("#ingest-tags").value) };
    const send = () => sse("/api/v1/ingest", { method: "POST", body: JSON.stringify(body) }, (name, d) => {
      if (name === "progress") {
        bar.max = Math.max(d.total, 1); bar.value = d.done;
        label.textContent = (d.phase === "embedding" ? "Embedding " : "Reading ") + d.done + " / " + d.total + (d.file ? " · " + d.file : "");
      } else if (name === "done") {
        bar.max = 1; bar.value = 1;
        label.textContent = "Done: " + d.filesNew + " new, " + d.filesChanged + " changed, " + d.filesUnchanged + " unchanged file(s); " +
          d.chunksAdded + " chunk(s) added, " + d.chunksUpdated + " updated, " + d.chunksRemoved + " removed" +
          (d.filesFailed.length ? "; failed: " + d.filesFailed.join("; ") : "");
        if (!state.searching) listItems();
      } else if (name === "error") throw new Error(d.message);
    });
    try {
      await send();
    } catch (e) {
      // A different file of the same name was uploaded before: replacing it changes what
      // KI_ana knows from it, so the owner decides.
      if (e.code !== "exists") throw e;
      if (!confirm(e.message.replace(/: send it again.*$/, "") + ".\n\nReplace it with the new file? (Cancel leaves it as it is; rename the new file to keep both.)")) {
        label.textContent = "Nothing ingested: a file of that name is already there.";
        bar.max = 1; bar.value = 0;
        return;
      }
      body.replace = true;
      await send();
    }
    $("#files").value = "";
  } catch (e) {
    label.textContent = "Failed: " + e.message;
    bar.max = 1; bar.value = 0;
    throw e;
  } finally {
    button.disabled = false;
  }
}));

// ---- ledger ----------------------------------------------------------------------------------
function dl(target, rows) {
  const d = $(target);
  d.replaceChildren();
  for (const [k, v] of rows) d.append(el("dt", null, k), el("dd", null, v === null || v === undefined ? "—" : String(v)));
}
async function ledgerStatus() {
  const s = await api("/api/v1/ledger");
  dl("#status", [["Height", s.height], ["Head", s.head], ["Blocks", s.blocks], ["Entries", s.entries], ["Knowledge items", s.items], ["Forgotten items", s.deletedItems]]);
}
function blockRow(b) {
  const li = el("li");
  li.dataset.height = b.height;
  const span = el("span", "grow", "#" + b.height + " · " + b.entryCount + " entr" + (b.entryCount === 1 ? "y" : "ies") + " · " + when(b.time) + " · " + short(b.hash));
  opens(span, guarded(() => openBlock(b.height)));
  li.append(span);
  return li;
}
async function blocks(older) {
  const q = older && state.oldest !== null ? "&before=" + state.oldest : "";
  const r = await api("/api/v1/ledger/blocks?limit=20" + q);
  if (!older) $("#blocks").replaceChildren();
  for (const b of r.blocks) $("#blocks").append(blockRow(b));
  state.oldest = r.blocks.length ? r.blocks[r.blocks.length - 1].height : 0;
  $("#older").hidden = state.oldest === 0;
}
$("#older").addEventListener("click", guarded(() => blocks(true)));
async function openBlock(height) {
  const b = await api("/api/v1/ledger/blocks/" + height);
  const box = $("#block");
  box.replaceChildren(el("h3", null, "Block " + b.height + (b.name ? " · " + b.name : "")));
  const d = el("dl");
  for (const [k, v] of [["Hash", b.hash], ["Parent", b.parent], ["Time", when(b.time)], ["Signed by", b.signerDevice], ["Entry root", b.entryRoot]]) d.append(el("dt", null, k), el("dd", null, v));
  box.append(d);
  const ul = el("ul", "list");
  for (const e of b.entries) {
    const li = el("li");
    const what = e.fields ? (e.fields.title || e.fields.text || "").slice(0, 80) : "";
    const span = el("span", "grow", e.kind + (e.item ? " · item " + short(e.item) : "") + (what ? " · " + what : "") + " · by " + e.authorDevice);
    const p = el("button", "secondary", "proof");
    p.addEventListener("click", guarded(async () => { $("#proof-id").value = e.id; await prove(e.id); }));
    li.append(span, p);
    ul.append(li);
  }
  box.append(ul);
  box.hidden = false;
  box.scrollIntoView({ behavior: "smooth", block: "nearest" });
}
$("#verify").addEventListener("click", guarded(async () => {
  $("#verify-result").textContent = "Verifying…";
  try {
    const r = await api("/api/v1/ledger/verify", { method: "POST" });
    $("#verify-result").textContent = "✓ valid: " + r.blocks + " blocks, " + r.entries + " entries, every signature and hash checked in " + r.seconds.toFixed(3) + " s";
  } catch (e) {
    $("#verify-result").textContent = "✗ " + e.message;
  }
}));

// Inclusion proofs are checked again here, in the browser (RFC 9162 §2.1.3.2 with SHA-256).
const bytes = (hex) => new Uint8Array(hex.match(/../g).map((h) => parseInt(h, 16)));
const hexOf = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");
async function sha(prefix, ...parts) {
  const all = new Uint8Array(1 + parts.reduce((n, p) => n + p.length, 0));
  all[0] = prefix;
  let at = 1;
  for (const p of parts) { all.set(p, at); at += p.length; }
  return new Uint8Array(await crypto.subtle.digest("SHA-256", all));
}
async function verifyInclusion(index, size, leaf, path, root) {
  if (index >= size) return false;
  let fn = index, sn = size - 1, r = await sha(0, bytes(leaf));
  for (const hex of path) {
    const p = bytes(hex);
    if (sn === 0) return false;
    if ((fn & 1) || fn === sn) {
      r = await sha(1, p, r);
      if (!(fn & 1)) while (!(fn & 1) && fn !== 0) { fn >>= 1; sn >>= 1; }
    } else {
      r = await sha(1, r, p);
    }
    fn >>= 1; sn >>= 1;
  }
  return sn === 0 && hexOf(r) === root;
}
async function prove(id) {
  $("#proof").hidden = true; // an old proof must not stand next to a new ID that failed
  $("#proof").replaceChildren();
  if (!id) throw new Error("Give an item or entry ID.");
  const p = await api("/api/v1/ledger/proof/" + encodeURIComponent(id));
  let local = "not checked (this page is not a secure context)";
  if (window.crypto && crypto.subtle) {
    const inBlock = await verifyInclusion(p.position, p.blockEntryCount, p.entry.id, p.entryPath, p.entryRoot);
    const inHistory = await verifyInclusion(p.height, p.treeSize, p.blockHash, p.historyPath, p.historyRoot);
    local = inBlock && inHistory ? "✓ verified in this browser" : "✗ does NOT verify";
  }
  const box = $("#proof");
  box.replaceChildren(el("h3", null, "Inclusion proof" + (p.item ? " of item " + short(p.item) : "")));
  const d = el("dl");
  for (const [k, v] of [["Entry", p.entry.id], ["Kind", p.entry.kind], ["Block", p.height + " (position " + p.position + " of " + p.blockEntryCount + ")"],
    ["Entry root", p.entryRoot], ["Path in block", p.entryPath.length + " hash(es)"], ["Block hash", p.blockHash],
    ["History root", p.historyRoot + " (" + p.treeSize + " blocks)"], ["Path in history", p.historyPath.length + " hash(es)"],
    ["Node", p.verified ? "✓ verified" : "✗"], ["Browser", local]]) d.append(el("dt", null, k), el("dd", null, v));
  box.append(d);
  box.dataset.local = local;
  box.hidden = false;
  box.scrollIntoView({ block: "nearest" });
}
$("#prove").addEventListener("submit", guarded(async (ev) => { ev.preventDefault(); await prove($("#proof-id").value.trim()); }));

// ---- device ----------------------------------------------------------------------------------
function renderPeers(peers) {
  const ul = $("#peers");
  ul.replaceChildren();
  const bytes = (n) => n == null ? "—" : n < 10000 ? n + " B" : n < 1e7 ? Math.round(n / 1000) + " kB" : Math.round(n / 1e6) + " MB";
  const ago = (t) => { if (!t) return "never"; const s = Math.max(0, Math.round((Date.now() - Date.parse(t)) / 1000)); return s < 120 ? s + " s ago" : Math.round(s / 60) + " min ago"; };
  for (const p of peers) {
    const li = el("li", null, (p.name || p.device || p.address || "unknown") + " · " + p.state + (p.member ? " · member" : "") +
      (p.address ? " · " + p.address : "") + (p.rttMillis != null ? " · " + p.rttMillis.toFixed(1) + " ms" : ""));
    if (p.member && (p.height != null || p.lastSync || p.bytesIn != null)) {
      li.append(el("div", "muted sync", "head " + (p.height != null ? p.height : "?") + (p.sync ? " · " + p.sync : "") +
        " · last sync " + ago(p.lastSync) + " · in " + bytes(p.bytesIn) + " / out " + bytes(p.bytesOut)));
    }
    for (const [label, why] of [["refused here", p.refusedHere], ["refused our blocks", p.refusedThere], ["sync failed", p.syncError], ["cannot link", p.dialError]]) {
      if (why) li.append(el("div", "error", label + ": " + why));
    }
    ul.append(li);
  }
  if (!peers.length) {
    const li = el("li", "muted", "No other devices yet. Pair one: run ");
    li.append(el("code", null, "kiana pair"), " here and ", el("code", null, "kiana join"), " on the new device.");
    ul.append(li);
  }
}
async function device() {
  const d = await api("/api/v1/device");
  dl("#identity", [["Device ID", d.deviceId], ["Public key", d.publicKey], ["Network", d.network], ["Authority", d.authority ? "yes" : "no"],
    ["Authorities", d.authorities.length], ["Language model", d.backend + " · " + (d.model || "default") + (d.modelsLoaded ? " (loaded)" : " (loads on first use)")],
    ["Data directory", d.dataDirectory], ["Device links", d.listening ? "port " + d.listening : "—"],
    ["History tree", d.treeSize != null ? d.treeSize + " blocks · root " + (d.treeRoot || "").slice(0, 16) + "…" : "—"],
    ["Sync", d.sync ? d.sync.blocksIn + " blocks in, " + d.sync.blocksOut + " out, " + d.sync.reorgs + " reorgs since start" : "—"]]);
  renderPeers(d.peers || []);
}

// ---- live updates ----------------------------------------------------------------------------
let refresh = null;
function later(f) { clearTimeout(refresh); refresh = setTimeout(guarded(f), 300); }
async function live() {
  let since = null; // the last block height seen: a reconnect replays what was missed
  for (let wait = 1000; ; wait = Math.min(wait * 2, 5000)) {
    try {
      await sse("/api/v1/events" + (since === null ? "" : "?since=" + since), {}, (name, d, id) => {
        if (!$("#live").classList.contains("on") && wait > 1000) {
          notice("Connected to the node again.");
          guarded(() => show(state.tab))(); // what was shown while it was away is stale or empty
        }
        $("#live").textContent = "live";
        $("#live").classList.add("on");
        wait = 1000;
        if (name === "hello" && since === null) since = d.height;
        if (id !== undefined) since = Number(id);
        if (name === "block" && state.tab === "ledger") {
          later(ledgerStatus);
          if (!$("#blocks").querySelector('[data-height="' + d.height + '"]')) $("#blocks").prepend(blockRow(d));
        }
        if (name === "head" && state.tab === "ledger") later(() => blocks());
        if (name === "knowledge" && state.tab === "knowledge") later(() => (state.searching ? refreshSearch() : refreshItems()));
        if (name === "peers" && state.tab === "device") renderPeers(d);
      });
    } catch (e) {
      // A refused token will not be accepted on a retry: the prompt is up, and using a token reloads the page.
      if (e.status === 401) { $("#live").textContent = "offline"; $("#live").classList.remove("on"); return; }
      /* otherwise reconnect below */
    }
    if ($("#live").classList.contains("on")) notice("The node is not reachable; the page reconnects on its own.", true);
    $("#live").textContent = "offline";
    $("#live").classList.remove("on");
    await new Promise((r) => setTimeout(r, wait));
  }
}

// Where the address points (a reload, a bookmark, a typed #item-… link, back/forward).
async function route() {
  let h = "";
  try { h = decodeURIComponent(location.hash.slice(1)); } catch (e) { /* a malformed address: the chat */ }
  const item = h.match(/^item-([0-9a-f]{1,64})$/i);
  const chat = h.match(/^chat\/([A-Za-z0-9-]{1,80})$/);
  if (item) {
    show("knowledge");
    place("#item-" + item[1]); // kept if the item cannot be loaded now (a bookmark survives a 503)
    await openItem(item[1]);
    return;
  }
  if (chat) {
    show("chat");
    if (chat[1] !== state.conversation && !asking()) await openConversation(chat[1]);
    await conversations();
    return;
  }
  if (["knowledge", "ledger", "device"].includes(h)) { show(h); return; }
  show("chat");
}
window.addEventListener("hashchange", guarded(route));
guarded(route)();
$("#question").focus();
voiceStatus();
live();
