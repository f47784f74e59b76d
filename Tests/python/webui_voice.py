#!/usr/bin/env python3
"""Drives KI_ana's web UI by voice in headless Chromium (Debian's chromium, DevTools protocol).

usage: webui_voice.py BASE_URL WAV_FILE SCREENSHOT_DIR

On a phone-sized screen, with Chromium's fake microphone playing WAV_FILE (a spoken question;
about a second of silence at both ends helps): clicks Talk, waits ~4 s, clicks it again; the UI
records, encodes a WAV, the node transcribes it, the text becomes the question and is asked.
Then the answer's Read aloud button fetches speech (a WAV) and plays it; then Auto read-aloud is
turned on and a typed question's answer is spoken sentence by sentence as it arrives.
A wrapper around the page's fetch records every API call the UI makes, which is what is checked.
Prints one JSON object with what it saw; exits non-zero with a message on any failure.
"""
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cdp import Browser  # noqa: E402

FACT = "The bakery closes at six in the evening."  # taught, so the typed answer has two sentences
TYPED = "When does the bakery open and close?"

# Records the UI's API calls: url, method, status, content type; for /voice/speak the text asked
# for and the audio's size; for /voice/transcribe the WAV's header and the transcript. Plays of
# <audio> are recorded too (when, which blob) to show speech reached the player.
WRAP = r"""
(() => {
  window.__calls = [];
  window.__plays = [];
  const original = window.fetch;
  window.fetch = async function (input, init = {}) {
    const url = typeof input === "string" ? input : input.url;
    const call = { url, method: (init.method || "GET").toUpperCase(), started: Math.round(performance.now()) };
    window.__calls.push(call);
    if (url.includes("/voice/speak") && init.body) call.text = JSON.parse(init.body).text;
    if (url.includes("/voice/transcribe") && init.body instanceof Blob) {
      const h = new DataView(await init.body.slice(0, 44).arrayBuffer());
      const tag = (at) => String.fromCharCode(...new Uint8Array(h.buffer, at, 4));
      call.request = { contentType: (init.headers || {})["Content-Type"], bytes: init.body.size, riff: tag(0), wave: tag(8),
        format: h.getUint16(20, true), channels: h.getUint16(22, true), rate: h.getUint32(24, true), bits: h.getUint16(34, true) };
    }
    try {
      const r = await original.call(this, input, init);
      call.status = r.status;
      call.type = r.headers.get("content-type");
      if (url.includes("/voice/")) {
        const body = await r.clone().arrayBuffer();
        call.bytes = body.byteLength;
        if (url.includes("/voice/transcribe")) call.response = new TextDecoder().decode(body);
      }
      call.finished = Math.round(performance.now());
      return r;
    } catch (e) {
      call.error = String(e);
      throw e;
    }
  };
  const play = HTMLMediaElement.prototype.play;
  HTMLMediaElement.prototype.play = function () {
    const entry = { src: this.src.slice(0, 5), at: Math.round(performance.now()) };
    window.__plays.push(entry);
    this.addEventListener("ended", () => { entry.ended = Math.round(performance.now()); }, { once: true });
    return play.call(this);
  };
})()
"""


def fail(msg, b=None, shots=None):
    if b is not None:
        try:
            if shots:
                b.screenshot(os.path.join(shots, "webui-voice-failed.png"))
            msg += "\n  #voice-status: " + repr(b.eval("document.querySelector('#voice-status').textContent"))
            msg += "\n  API calls: " + json.dumps(b.eval("window.__calls || []"))
            msg += "\n  console errors: " + json.dumps(b.console_errors())
        except Exception as e:  # the browser may be gone: say what we know
            msg += f"\n  (no more detail: {e})"
    raise SystemExit("webui_voice: FAILED: " + msg)


def click(b, selector):
    """A mouse click on the element: pointerdown and pointerup (then click) dispatched in one task
    of the page, as a quick click arrives. (Sending them as two DevTools input events let a busy
    machine put half a second between them, which the UI rightly takes for a press-and-hold.)"""
    b.eval(f"""(() => {{
      const t = document.querySelector({json.dumps(selector)}), r = t.getBoundingClientRect();
      const at = {{ bubbles: true, cancelable: true, pointerId: 1, pointerType: "mouse", isPrimary: true, button: 0,
                    clientX: r.x + r.width / 2, clientY: r.y + r.height / 2 }};
      t.dispatchEvent(new PointerEvent("pointerdown", at));
      t.dispatchEvent(new PointerEvent("pointerup", at));
      t.dispatchEvent(new MouseEvent("click", {{ ...at, detail: 1 }}));
    }})()""")


def speakable(s):  # as the UI's: citation marks are not read out
    return re.sub(r"\s+", " ", re.sub(r"\[\d+(?:\s*[,–-]\s*\d+)*\]", "", s)).strip()


def speak_calls(calls):
    return [{"text": c.get("text"), "status": c.get("status"), "type": c.get("type"), "bytes": c.get("bytes")}
            for c in calls if c["url"].endswith("/api/v1/voice/speak")]


def in_order(texts, answer):
    """Each spoken text occurs in the answer after the one before it."""
    at = 0
    for t in texts:
        i = answer.find(t, at)
        if i < 0:
            return False
        at = i + len(t)
    return True


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    base, wav, shots = sys.argv[1].rstrip("/"), os.path.abspath(sys.argv[2]), sys.argv[3]
    if not os.path.isfile(wav):
        raise SystemExit(f"webui_voice: no such WAV file: {wav}")
    os.makedirs(shots, exist_ok=True)
    seen = {}
    args = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            "--use-file-for-fake-audio-capture=" + wav + "%noloop",  # silence after the file, not a repeat
            "--autoplay-policy=no-user-gesture-required"]
    with Browser(width=390, height=844, mobile=True, args=args) as b:
        b.goto(base + "/")
        b.wait_for("document.querySelector('#live').textContent === 'live'", timeout=20)
        b.eval("document.querySelector('nav [data-tab=chat]').click()")
        try:  # the controls appear once GET /api/v1/voice has answered
            b.wait_for("!document.querySelector('#talk').hidden", timeout=10)
        except TimeoutError:
            fail("the Talk button never appeared (GET /api/v1/voice failed?)", b, shots)
        talk = b.eval("[document.querySelector('#talk').disabled, document.querySelector('#talk').title]")
        if talk[0]:
            fail("the Talk button is disabled: " + talk[1], b, shots)
        seen["talk_label"] = b.eval("document.querySelector('#talk').getAttribute('aria-label')")
        # A second fact, so the typed question below has an answer of two sentences.
        b.eval(f"""fetch('/api/v1/knowledge?limit=100').then(r => r.json()).then(j => j.items.some(i => i.text === {json.dumps(FACT)})
                   || fetch('/api/v1/knowledge', {{method: 'POST', headers: {{'Content-Type': 'application/json'}},
                                                   body: JSON.stringify({{text: {json.dumps(FACT)}}})}}).then(r => r.ok))""")
        b.eval(WRAP)

        # Push-to-talk, as click-to-toggle: click, ~4 s of the fake microphone, click.
        click(b, "#talk")
        try:
            b.wait_for("document.querySelector('#talk').getAttribute('aria-pressed') === 'true'"
                       " && document.querySelector('#talk .label').textContent.startsWith('Listening')"
                       " && voice.rec && voice.rec.state === 'recording'", timeout=30)
        except TimeoutError:
            fail("clicking Talk did not start a recording", b, shots)
        # The microphone is read on the audio thread (an AudioWorklet), not by a main-thread
        # ScriptProcessorNode a busy page can starve.
        seen["capture_node"] = b.eval("voice.rec && voice.rec.node ? voice.rec.node.constructor.name : null")
        if seen["capture_node"] != "AudioWorkletNode":
            fail("the recording is not captured by an AudioWorkletNode: " + repr(seen["capture_node"]), b, shots)
        time.sleep(4)
        seen["recording_label"] = b.eval("document.querySelector('#talk .label').textContent")
        b.screenshot(os.path.join(shots, "webui-voice-recording.png"))
        click(b, "#talk")
        try:
            b.wait_for("window.__calls.some(c => c.url.endsWith('/voice/transcribe') && (c.status || c.error))", timeout=60)
        except TimeoutError:
            fail("no POST /api/v1/voice/transcribe after the second click", b, shots)
        transcribe = [c for c in b.eval("window.__calls") if c["url"].endswith("/api/v1/voice/transcribe")]
        seen["transcribe_calls"] = transcribe
        t = transcribe[0]
        if t.get("status") != 200:
            fail(f"transcription answered {t.get('status')} {t.get('error') or t.get('response')}", b, shots)
        r = t["request"]
        if (r["riff"], r["wave"], r["format"], r["channels"], r["bits"]) != ("RIFF", "WAVE", 1, 1, 16) or not 8000 <= r["rate"] <= 96000:
            fail("the recording is not a 16-bit mono PCM WAV at 8–96 kHz: " + json.dumps(r), b, shots)
        heard = json.loads(t["response"])["text"].strip()
        if not heard:
            fail("nothing was recognised in the recording (is the fake microphone playing " + wav + "?)", b, shots)
        try:
            b.wait_for("!!document.querySelector('#messages .msg.user')", timeout=20)
        except TimeoutError:
            fail("the transcript was not asked", b, shots)
        seen["question"] = b.eval("document.querySelector('#messages .msg.user .text').textContent")
        if seen["question"] != heard:
            fail(f"the question {seen['question']!r} is not the transcript {heard!r}", b, shots)
        if not any(c["url"].endswith("/api/v1/ask") and c["method"] == "POST" for c in b.eval("window.__calls")):
            fail("the transcript was not sent to POST /api/v1/ask", b, shots)
        try:
            b.wait_for("!!document.querySelector('#messages .msg.assistant:not(.pending)')", timeout=240)
        except TimeoutError:
            fail("the answer did not finish", b, shots)
        error = b.eval("(document.querySelector('#messages .msg.error') || {}).textContent || ''")
        if error:
            fail("the answer failed: " + error, b, shots)
        seen["answer"] = b.eval("document.querySelector('#messages .msg.assistant .text').textContent")

        # Read aloud: one answer's text (not its sources) becomes speech, and it plays.
        before = len(b.eval("window.__calls"))
        b.eval("document.querySelector('#messages .msg.assistant .read-aloud').click()")
        seen["read_aloud_pressed"] = b.eval("document.querySelector('#messages .msg.assistant .read-aloud').getAttribute('aria-pressed')")
        ok = ("window.__calls.slice(%d).some(c => c.url.endsWith('/voice/speak') && c.status === 200"
              " && (c.type || '').startsWith('audio/wav') && c.bytes > 1000)" % before)
        try:
            b.wait_for(ok, timeout=60)
        except TimeoutError:
            fail("Read aloud got no speech (a 200 audio/wav of > 1000 bytes from POST /api/v1/voice/speak)", b, shots)
        try:  # it played to its end, and the button went back
            b.wait_for("document.querySelector('#messages .msg.assistant .read-aloud').getAttribute('aria-pressed') === 'false'", timeout=60)
        except TimeoutError:
            fail("the answer's speech did not finish playing", b, shots)
        seen["speak_calls"] = speak_calls(b.eval("window.__calls")[before:])
        seen["read_aloud_plays"] = b.eval("window.__plays")
        if not all(p.get("ended") for p in seen["read_aloud_plays"]) or not seen["read_aloud_plays"]:
            fail("the speech did not play to its end: " + json.dumps(seen["read_aloud_plays"]), b, shots)
        spoken = " ".join(c["text"] for c in seen["speak_calls"])
        if "Sources" in spoken or speakable(spoken) != speakable(seen["answer"]):
            fail(f"Read aloud spoke {spoken!r}, not the answer {seen['answer']!r}", b, shots)

        # Auto read-aloud: remembered, and a typed question's answer is spoken sentence by sentence.
        b.eval("document.querySelector('#autoread').click()")
        seen["autoread_stored"] = b.eval("localStorage.getItem('kiana-autoread')")
        if seen["autoread_stored"] != "1":
            fail("Auto read-aloud is not remembered in localStorage", b, shots)
        before, plays = len(b.eval("window.__calls")), len(b.eval("window.__plays"))
        b.eval(f"document.querySelector('#question').value = {json.dumps(TYPED)}")
        b.eval("document.querySelector('#ask').requestSubmit()")
        try:
            b.wait_for("document.querySelectorAll('#messages .msg.assistant').length === 2"
                       " && !document.querySelector('#messages .msg.assistant:last-child.pending')", timeout=240)
        except TimeoutError:
            fail("the typed question's answer did not finish", b, shots)
        answer2 = b.eval("[...document.querySelectorAll('#messages .msg.assistant .text')].pop().textContent")
        seen["autoread_answer"] = answer2
        try:  # every sentence was asked for, and the last one has played
            b.wait_for("window.__calls.slice(%d).filter(c => c.url.endsWith('/voice/speak')).every(c => c.status)"
                       " && !document.querySelector('.read-aloud[aria-pressed=true]')" % before, timeout=90)
        except TimeoutError:
            fail("auto read-aloud did not finish", b, shots)
        calls = b.eval("window.__calls")[before:]
        seen["autoread_calls"] = speak_calls(calls)
        seen["autoread_plays"] = b.eval("window.__plays")[plays:]
        if not seen["autoread_calls"]:
            fail("Auto read-aloud made no POST /api/v1/voice/speak for the new answer", b, shots)
        bad = [c for c in seen["autoread_calls"] if c["status"] != 200 or not (c["type"] or "").startswith("audio/wav") or c["bytes"] <= 1000]
        if bad:
            fail("auto read-aloud speech failed: " + json.dumps(bad), b, shots)
        texts = [c["text"] for c in seen["autoread_calls"]]
        if not in_order(texts, speakable(answer2)) or speakable(" ".join(texts)) != speakable(answer2):
            fail(f"auto read-aloud spoke {texts!r}, not the answer's sentences in order: {answer2!r}", b, shots)
        if len(seen["autoread_plays"]) != len(texts) or not all(p.get("ended") for p in seen["autoread_plays"]):
            fail("auto read-aloud did not play every sentence to its end: " + json.dumps(seen["autoread_plays"]), b, shots)
        speaks = [c for c in calls if c["url"].endswith("/voice/speak")]
        # Queued, not batched: when there are several sentences, the first plays before the last is made.
        seen["autoread_first_play_before_last_synthesis"] = (
            seen["autoread_plays"][0]["at"] < speaks[-1]["finished"] if len(speaks) > 1 else None)

        b.eval("window.scrollTo(0, document.body.scrollHeight)")
        b.screenshot(os.path.join(shots, "webui-voice.png"))
        seen["overflow"] = b.eval("document.documentElement.scrollWidth > innerWidth")
        if seen["overflow"]:
            fail("the page is wider than the phone's screen", b, shots)
        seen["console_errors"] = b.console_errors()
        if seen["console_errors"]:
            fail("console errors: " + json.dumps(seen["console_errors"]), b, shots)
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
