#!/usr/bin/env python3
"""Drives KI_ana's web UI in headless Chromium (Debian's chromium, DevTools protocol).

usage: webui_browser.py BASE_URL SCREENSHOT_DIR [TOKEN_BASE_URL]

On a phone-sized screen: teaches a fact in the Knowledge tab, asks about it in the Chat tab,
sees the checked answer with the source sentence that supports it under it, follows the citation to the knowledge item, opens
its inclusion proof (checked again in the browser with WebCrypto) and saves screenshots.
TOKEN_BASE_URL, if given, is another node started with --token: a wrong token must be refused
with the node's reason next to the prompt.
Prints one JSON object with what it saw; exits non-zero on any failure (the checks that record
what they saw and go on are listed on stderr at the end).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cdp import Browser  # noqa: E402

FACT = "The garage door code is 7319."
QUESTION = "What is the garage door code?"


def settle(b, js, timeout):
    """js once it is truthy, or its value when the time is up: the check is recorded, not raised."""
    try:
        return b.wait_for(js, timeout=timeout)
    except TimeoutError:
        return b.eval(js)


def main():
    base, shots = sys.argv[1], sys.argv[2]
    token_base = sys.argv[3] if len(sys.argv) > 3 else None
    os.makedirs(shots, exist_ok=True)
    seen = {}
    failed = []  # checks that did not hold: reported together at the end

    def check(name, ok):
        if not ok:
            failed.append(name + ": " + json.dumps(seen.get(name)))
    with Browser(width=390, height=844, mobile=True) as b:
        b.goto(base + "/")
        b.wait_for("document.querySelector('#live').textContent === 'live'", timeout=20)

        # Teach a fact.
        b.eval("document.querySelector('nav [data-tab=knowledge]').click()")
        b.eval(f"document.querySelector('#text').value = {json.dumps(FACT)}")
        b.eval("document.querySelector('#add').requestSubmit()")
        b.wait_for(f"[...document.querySelectorAll('#items li')].some(li => li.textContent.includes({json.dumps(FACT)}))", timeout=30)
        item = b.eval(f"""fetch('/api/v1/knowledge').then(r => r.json())
                          .then(j => j.items.find(i => i.text === {json.dumps(FACT)}).id)""")
        seen["item"] = item

        # Ask about it and count how often the answer's text changes while it streams.
        b.eval("document.querySelector('nav [data-tab=chat]').click()")
        b.eval("""window.__updates = [];
                  new MutationObserver(() => {
                    const a = document.querySelector('#messages .msg.assistant .text');
                    if (a && a.textContent && window.__updates[window.__updates.length - 1] !== a.textContent) window.__updates.push(a.textContent);
                  }).observe(document.querySelector('#messages'), {subtree: true, childList: true, characterData: true});""")
        b.eval(f"document.querySelector('#question').value = {json.dumps(QUESTION)}")
        b.eval("document.querySelector('#ask').requestSubmit()")
        # The conversation cannot be switched under a pending answer.
        seen["switch_locked"] = b.eval("document.querySelector('#conversations').disabled")
        # (DOM nodes come back as {}, which Python reads as false: hence the !!)
        b.wait_for("!!document.querySelector('#messages .msg.assistant:not(.pending)')", timeout=240)
        error = b.eval("(document.querySelector('#messages .msg.error') || {}).textContent || ''")
        if error:
            raise SystemExit("the answer failed: " + error)
        seen["answer"] = b.eval("document.querySelector('#messages .msg.assistant .text').textContent")
        seen["updates"] = len(b.eval("window.__updates"))
        seen["citations"] = b.eval("[...document.querySelectorAll('#messages .citation')].map(a => a.dataset.id)")
        seen["support"] = b.eval("[...document.querySelectorAll('#messages .support blockquote')].map(q => q.textContent)")
        if not seen["citations"]:
            raise SystemExit("the answer cites nothing: " + json.dumps(seen))
        b.screenshot(os.path.join(shots, "webui-chat.png"))
        seen["chat_hash"] = b.eval("location.hash")

        # An answer whose stream ends without its `done` event (the node restarted, a proxy cut
        # the connection) keeps the text that came but is marked as cut off, never shown as a
        # finished answer. The next /ask response is passed through up to its first token, then ends.
        b.eval("""window.__fetch = window.fetch;
                  window.fetch = async (url, options) => {
                    const r = await window.__fetch(url, options);
                    if (!String(url).endsWith('/api/v1/ask')) return r;
                    window.fetch = window.__fetch;
                    const reader = r.body.getReader(), decoder = new TextDecoder();
                    let text = '';
                    return new Response(new ReadableStream({ async pull(c) {
                      for (;;) {
                        const { value, done } = await reader.read();
                        if (done) { c.close(); return; }
                        text += decoder.decode(value, { stream: true });
                        const token = text.indexOf('event: token'), end = token < 0 ? -1 : text.indexOf('\\n\\n', token);
                        if (end >= 0) { c.enqueue(new TextEncoder().encode(text.slice(0, end + 2))); c.close(); reader.cancel(); return; }
                      }
                    } }), { status: r.status, headers: r.headers });
                  };""")
        b.eval(f"document.querySelector('#question').value = {json.dumps(QUESTION)}")
        b.eval("document.querySelector('#ask').requestSubmit()")
        b.wait_for("document.querySelectorAll('#messages .msg.assistant').length === 2 && !document.querySelector('#messages .msg.pending')"
                   " && !document.querySelector('#ask [type=submit]').disabled", timeout=240)
        seen["cut_answer"] = b.eval("""(() => { const m = [...document.querySelectorAll('#messages .msg.assistant')].pop();
                                       return { classes: m.className, text: m.querySelector('.text').textContent,
                                                said: m.textContent, citations: m.querySelectorAll('.citation').length }; })()""")
        cut = seen["cut_answer"]
        check("cut_answer", "interrupted" in cut["classes"].split() and cut["text"] and not cut["text"].startswith("Error")
              and "cut off" in cut["said"] and "Ask again" in cut["said"] and cut["citations"] == 0)

        # Follow the first citation to the knowledge item.
        b.eval("document.querySelector('#messages .citation').click()")
        b.wait_for("!document.querySelector('#item').hidden && !!document.querySelector('#item .body')", timeout=20)
        seen["opened"] = b.eval("document.querySelector('#item .body').textContent")
        b.screenshot(os.path.join(shots, "webui-item.png"))

        # Its inclusion proof, verified by the node and again in the browser.
        b.eval("[...document.querySelectorAll('#item button')].find(x => x.textContent === 'Proof').click()")
        b.wait_for("document.querySelector('#proof').dataset.local", timeout=20)
        seen["proof"] = b.eval("document.querySelector('#proof').dataset.local")
        b.screenshot(os.path.join(shots, "webui-proof.png"))

        # Verify the whole ledger; open the newest block.
        b.eval("document.querySelector('#verify').click()")
        b.wait_for("document.querySelector('#verify-result').textContent.startsWith('✓') || document.querySelector('#verify-result').textContent.startsWith('✗')", timeout=30)
        seen["verify"] = b.eval("document.querySelector('#verify-result').textContent")
        b.wait_for("document.querySelectorAll('#blocks li').length >= 3", timeout=20)
        b.eval("document.querySelector('#blocks li .grow').click()")
        b.wait_for("!document.querySelector('#block').hidden && document.querySelectorAll('#block li').length > 0", timeout=20)
        seen["block_entries"] = b.eval("[...document.querySelectorAll('#block li')].map(li => li.textContent)")

        # Ingest a file through the file picker and watch the progress bar finish.
        upload = os.path.join(shots, "trip-notes.md")
        with open(upload, "w") as f:
            f.write("# Trip\n\nThe ferry to the island leaves at 9:40 from pier 3.\n\n## Packing\n\nBring the blue rain jacket.\n")
        b.eval("document.querySelector('nav [data-tab=knowledge]').click()")
        b.eval("document.querySelectorAll('#knowledge details').forEach(d => d.open = true)")
        root = b.send("DOM.getDocument")["root"]["nodeId"]
        picker = b.send("DOM.querySelector", nodeId=root, selector="#files")["nodeId"]
        b.send("DOM.setFileInputFiles", nodeId=picker, files=[upload])
        b.eval("""window.__progress = [];
                  new MutationObserver(() => window.__progress.push(document.querySelector('#ingest-text').textContent))
                    .observe(document.querySelector('#ingest-text'), {childList: true, characterData: true, subtree: true});""")
        b.eval("document.querySelector('#ingest').requestSubmit()")
        b.wait_for("document.querySelector('#ingest-text').textContent.startsWith('Done')", timeout=120)
        seen["ingest"] = b.eval("window.__progress")
        seen["ingest_bar"] = b.eval("[document.querySelector('#ingest-progress').value, document.querySelector('#ingest-progress').max]")
        b.screenshot(os.path.join(shots, "webui-ingest.png"))

        # Search finds the ingested chunk; edit it.
        b.eval("document.querySelector('#query').value = 'ferry island'")
        b.eval("document.querySelector('#find').requestSubmit()")
        b.wait_for("document.querySelector('#count').textContent.includes('ferry island')", timeout=90)
        seen["search"] = b.eval("[...document.querySelectorAll('#items li .grow')].map(x => x.textContent)")
        # Opened from the keyboard: the row takes focus and Enter opens it, as a button would.
        b.eval("[...document.querySelectorAll('#items li .grow')].find(x => x.textContent.includes('ferry')).focus()")
        seen["row_focused"] = b.eval("document.activeElement.classList.contains('grow') && document.activeElement.getAttribute('role') === 'button'")
        for kind in ("keyDown", "keyUp"):
            b.send("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13)
        b.wait_for("!document.querySelector('#item').hidden && (document.querySelector('#item .body') || {}).textContent.includes('ferry')", timeout=20)
        b.eval("[...document.querySelectorAll('#item button')].find(x => x.textContent === 'Edit').click()")
        b.eval("document.querySelector('#item form.edit textarea').value = 'The ferry to the island leaves at 10:15 from pier 3.'")
        b.eval("document.querySelector('#item form.edit').requestSubmit()")
        b.wait_for("(document.querySelector('#item .body') || {}).textContent === 'The ferry to the island leaves at 10:15 from pier 3.'", timeout=20)
        seen["edited"] = b.eval("document.querySelector('#item .body').textContent")
        # The steps below fail requests on purpose (412, 409, 400): the browser logs those.
        expected_failures = len(b.console_errors())

        # Two tabs on one item: the edit form opened before another tab saved is not saved over
        # it; the form and what was typed in it stay.
        b.eval("[...document.querySelectorAll('#item button')].find(x => x.textContent === 'Edit').click()")
        b.eval("document.querySelector('#item form.edit textarea').value = 'Typed in the stale tab.'")
        ferry = b.eval("document.querySelector('#item').dataset.id || ''")
        b.eval(f"""fetch('/api/v1/knowledge/{ferry}', {{method: 'PUT', headers: {{'Content-Type': 'application/json'}},
                   body: JSON.stringify({{title: 'Saved by the other tab'}})}}).then(r => r.status)""")
        b.eval("document.querySelector('#notice').hidden = true; document.querySelector('#notice').textContent = ''")
        b.eval("document.querySelector('#item form.edit').requestSubmit()")
        b.wait_for("!document.querySelector('#notice').hidden", timeout=20)
        seen["conflict_notice"] = b.eval("document.querySelector('#notice').textContent")
        seen["conflict_kept"] = b.eval("(document.querySelector('#item form.edit textarea') || {}).value || ''")
        seen["conflict_title"] = b.eval(f"fetch('/api/v1/knowledge/{ferry}').then(r => r.json()).then(j => j.title + ' | ' + j.text)")

        # An edit changes only what was edited: a title the item does not have stays absent, and
        # tags the comma separated field cannot show (a comma in one, spaces) stay as they were.
        odd = b.eval("""fetch('/api/v1/knowledge', {method: 'POST', headers: {'Content-Type': 'application/json'},
                        body: JSON.stringify({text: 'Tag comma test.', tags: ['a,b', 'Home ', ' x']})}).then(r => r.json()).then(j => j.id)""")
        b.eval(f"openItem('{odd}')")
        b.wait_for("(document.querySelector('#item .body') || {}).textContent === 'Tag comma test.'", timeout=20)
        b.eval("[...document.querySelectorAll('#item button')].find(x => x.textContent === 'Edit').click()")
        b.eval("document.querySelector('#item form.edit textarea').value = 'Tag comma test, edited.'")
        b.eval("document.querySelector('#item form.edit').requestSubmit()")
        b.wait_for("(document.querySelector('#item .body') || {}).textContent === 'Tag comma test, edited.'", timeout=20)
        seen["edit_untouched"] = b.eval(f"fetch('/api/v1/knowledge/{odd}').then(r => r.json()).then(j => [j.title, j.tags, j.text])")
        check("edit_untouched", seen["edit_untouched"] == [None, ["a,b", "Home ", " x"], "Tag comma test, edited."])
        # Tags that were edited are sent, as the field shows them.
        b.eval("[...document.querySelectorAll('#item button')].find(x => x.textContent === 'Edit').click()")
        b.eval("document.querySelector('#item form.edit input:last-of-type').value = 'garden, shed'")
        b.eval("document.querySelector('#item form.edit').requestSubmit()")
        b.wait_for("[...document.querySelectorAll('#item .tag')].map(t => t.textContent).join() === 'garden,shed'", timeout=20)
        seen["edit_tags"] = b.eval(f"fetch('/api/v1/knowledge/{odd}').then(r => r.json()).then(j => [j.title, j.tags, j.text])")
        check("edit_tags", seen["edit_tags"] == [None, ["garden", "shed"], "Tag comma test, edited."])

        # Another file of the same name asks before it replaces the first one's knowledge.
        with open(upload, "w") as f:
            f.write("# Office\n\nThe printer on floor 2 needs a PIN.\n")
        b.send("DOM.setFileInputFiles", nodeId=picker, files=[upload])
        b.eval("window.__asked = []; window.confirm = (m) => { window.__asked.push(m); return false; }")
        b.eval("document.querySelector('#ingest').requestSubmit()")
        b.wait_for("document.querySelector('#ingest-text').textContent.startsWith('Nothing ingested')", timeout=60)
        seen["replace_asked"] = b.eval("window.__asked")
        b.send("DOM.setFileInputFiles", nodeId=picker, files=[upload])
        b.eval("window.confirm = (m) => true")
        b.eval("document.querySelector('#ingest').requestSubmit()")
        b.wait_for("document.querySelector('#ingest-text').textContent.startsWith('Done') || document.querySelector('#ingest-text').textContent.startsWith('Failed')", timeout=120)
        seen["replaced"] = b.eval("document.querySelector('#ingest-text').textContent")

        # A Latin-1 text file keeps its umlauts; a file of an unsupported type is refused before
        # anything is sent, and a failed ingest says so instead of spinning on.
        latin1 = os.path.join(shots, "schluessel.txt")
        with open(latin1, "wb") as f:
            f.write("Der Schlüssel für den Keller hängt bei Frau Müller.\n".encode("latin-1"))
        b.send("DOM.setFileInputFiles", nodeId=picker, files=[latin1])
        b.eval("document.querySelector('#ingest').requestSubmit()")
        b.wait_for("document.querySelector('#ingest-text').textContent.startsWith('Done: 1 new')", timeout=120)
        seen["latin1"] = b.eval("fetch('/api/v1/search?mode=keyword&q=Keller').then(r => r.json()).then(j => j.hits.map(h => h.text))")
        png = os.path.join(shots, "picture.png")
        with open(png, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n" + bytes(64))
        b.send("DOM.setFileInputFiles", nodeId=picker, files=[png])
        b.eval("document.querySelector('#notice').hidden = true; document.querySelector('#notice').textContent = ''")
        b.eval("document.querySelector('#ingest').requestSubmit()")
        b.wait_for("document.querySelector('#notice').textContent.includes('picture.png')", timeout=20)
        seen["wrong_type"] = b.eval("document.querySelector('#notice').textContent")

        # A forgotten item opens as forgotten, without Edit; a proof that fails leaves no old one.
        b.eval(f"fetch('/api/v1/knowledge/{ferry}', {{method: 'DELETE'}}).then(r => r.status)")
        b.eval(f"openItem('{ferry}')")
        b.wait_for("(document.querySelector('#item h3') || {}).textContent.includes('forgotten')", timeout=20)
        seen["forgotten_buttons"] = b.eval("[...document.querySelectorAll('#item button')].map(x => x.textContent)")
        b.eval("document.querySelector('nav [data-tab=ledger]').click()")
        b.eval("document.querySelector('#proof-id').value = 'zzz'")
        b.eval("document.querySelector('#prove').requestSubmit()")
        b.wait_for("document.querySelector('#proof').hidden", timeout=20)
        seen["failed_proof_hidden"] = b.eval("document.querySelector('#proof').hidden && !document.querySelector('#proof').textContent")

        # Search results follow edits and forgets made elsewhere, and Forget on a row that was
        # forgotten meanwhile counts as done: the row goes, the count follows.
        b.eval("document.querySelector('nav [data-tab=knowledge]').click()")
        attic = b.eval("""Promise.all(['The attic ladder is stored in the hallway closet.', 'The attic ladder has a spare hinge in the toolbox.']
                          .map(text => fetch('/api/v1/knowledge', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                                  body: JSON.stringify({text})}).then(r => r.json()).then(j => j.id)))""")
        b.eval("document.querySelector('#mode').value = 'keyword'; document.querySelector('#query').value = 'attic ladder'")
        b.eval("document.querySelector('#find').requestSubmit()")
        b.wait_for("document.querySelector('#count').textContent.startsWith('2 hits for') && document.querySelectorAll('#items li[data-id]').length === 2", timeout=60)
        rows = "[document.querySelector('#count').textContent, ...[...document.querySelectorAll('#items li .grow')].map(x => x.textContent)]"
        b.eval(f"""fetch('/api/v1/knowledge/{attic[0]}', {{method: 'PUT', headers: {{'Content-Type': 'application/json'}},
                   body: JSON.stringify({{text: 'The attic ladder now hangs in the garage.'}})}}).then(r => r.status)""")
        settle(b, "document.querySelector('#items').textContent.includes('now hangs in the garage')", 30)
        seen["search_edited"] = b.eval(rows)
        check("search_edited", any("now hangs in the garage" in r for r in seen["search_edited"][1:]))
        b.eval(f"fetch('/api/v1/knowledge/{attic[1]}', {{method: 'DELETE'}}).then(r => r.status)")
        settle(b, "document.querySelector('#count').textContent.startsWith('1 hit for') && !document.querySelector('#items').textContent.includes('spare hinge')", 30)
        seen["search_forgotten"] = b.eval(rows)
        check("search_forgotten", seen["search_forgotten"][0].startswith("1 hit for") and not any("spare hinge" in r for r in seen["search_forgotten"]))
        # Forgotten in another tab, then Forget pressed on the row before the page heard of it.
        b.eval("window.confirm = () => true; document.querySelector('#notice').hidden = true; document.querySelector('#notice').textContent = ''")
        seen["stale_forget_clicked"] = b.eval(f"""fetch('/api/v1/knowledge/{attic[0]}', {{method: 'DELETE'}}).then(r => {{
                   const row = document.querySelector('#items li[data-id="{attic[0]}"] button.danger');
                   if (row) row.click();
                   return !!row; }})""")
        b.wait_for("!document.querySelector('#notice').hidden", timeout=20)
        settle(b, f"document.querySelector('#count').textContent.startsWith('0 hits for') && !document.querySelector('#items li[data-id=\"{attic[0]}\"]')", 30)
        seen["stale_forget"] = b.eval(f"""[document.querySelector('#notice').textContent, document.querySelector('#notice').classList.contains('error'),
                                           document.querySelector('#count').textContent, !!document.querySelector('#items li[data-id="{attic[0]}"]')]""")
        check("stale_forget", seen["stale_forget_clicked"] and seen["stale_forget"][1:] == [False, "0 hits for “attic ladder”", False])
        b.eval("document.querySelector('#mode').value = 'hybrid'")

        # Paged down past the first 100 rows, a change made elsewhere keeps the rows shown.
        b.eval("document.querySelector('nav [data-tab=knowledge]').click()")
        b.eval("document.querySelector('#query').value = ''; document.querySelector('#find').requestSubmit()")  # leave the search
        b.eval("""(async () => { for (let i = 0; i < 120; i += 20) await Promise.all([...Array(20).keys()].map(j =>
                    fetch('/api/v1/knowledge', {method: 'POST', headers: {'Content-Type': 'application/json'},
                          body: JSON.stringify({text: 'Filler note ' + (i + j)})}))); })()""", timeout=240)
        b.wait_for("!document.querySelector('#more').hidden", timeout=90)
        b.eval("document.querySelector('#more').click()")
        b.wait_for("document.querySelectorAll('#items li').length > 100", timeout=90)
        before = b.eval("document.querySelectorAll('#items li').length")
        b.eval("""fetch('/api/v1/knowledge', {method: 'POST', headers: {'Content-Type': 'application/json'},
                  body: JSON.stringify({text: 'Written in another tab.'})}).then(r => r.status)""")
        b.wait_for("document.querySelector('#items li .grow').textContent.includes('Written in another tab.')", timeout=90)
        seen["paging_kept"] = [before, b.eval("document.querySelectorAll('#items li').length")]

        # The device page.
        b.eval("document.querySelector('nav [data-tab=device]').click()")
        b.wait_for("document.querySelector('#identity').textContent.includes('Device ID')", timeout=60)
        seen["device"] = b.eval("document.querySelector('#identity').innerText")
        seen["peers"] = b.eval("document.querySelector('#peers').innerText")
        b.screenshot(os.path.join(shots, "webui-device.png"))

        # The address keeps what is shown: a reload comes back to the conversation, an item, a tab.
        b.goto("about:blank")  # a new load, not a same-document hash change
        b.goto(base + "/" + seen["chat_hash"])
        b.wait_for(f"[...document.querySelectorAll('#messages .msg.user')].some(m => m.textContent.includes({json.dumps(QUESTION)}))", timeout=60)
        seen["reload_conversation"] = [b.eval("document.querySelector('#chat').classList.contains('active')"),
                                       b.eval("document.querySelector('#conversations').value"), b.eval("location.hash")]
        b.goto("about:blank")
        b.goto(base + "/#item-" + item)
        b.wait_for("!document.querySelector('#item').hidden && !!document.querySelector('#item .body')", timeout=60)
        seen["reload_item"] = [b.eval("document.querySelector('#knowledge').classList.contains('active')"),
                               b.eval("document.querySelector('#item .body').textContent")]
        # A malformed address is the chat, not a dead page.
        b.goto("about:blank")
        b.goto(base + "/#chat/%E0%A4%A")
        b.wait_for("document.querySelector('#conversations').options.length > 1", timeout=60)
        seen["malformed_hash_chat"] = b.eval("document.querySelector('#conversations').options.length")
        b.eval("location.hash = '#ledger'")  # typed in the address bar: no reload, a hashchange
        b.wait_for("document.querySelector('#ledger').classList.contains('active')", timeout=60)
        # A token kept in this browser can be forgotten from the device page.
        # The old document is marked, so the wait below cannot be answered by it before the reload starts.
        b.eval("window.kianaBeforeReload = true; localStorage.setItem('kiana-token', 'not-the-token'); location.reload()")
        b.wait_for("!window.kianaBeforeReload && document.readyState === 'complete' && !!document.querySelector('nav [data-tab=device]') && !!document.querySelector('#forget-token')", timeout=60)
        b.eval("document.querySelector('nav [data-tab=device]').click()")
        b.wait_for("!document.querySelector('#forget-token').hidden", timeout=60)
        b.eval("document.querySelector('#forget-token').click()")
        seen["token_forgotten"] = b.eval("localStorage.getItem('kiana-token') === null && document.querySelector('#forget-token').hidden")
        errors = b.console_errors()
        # Only the failures those steps cause on purpose are left out: the stale edit (412), the
        # same-name upload (409), the proof of "zzz" and the Forget of a row forgotten elsewhere (400).
        wanted = [("412", f"/api/v1/knowledge/{ferry}"), ("409", "/api/v1/ingest"), ("40", "/api/v1/ledger/proof/zzz"),
                  ("400", f"/api/v1/knowledge/{attic[0]}")]
        seen["console_errors"] = errors[:expected_failures] + [
            e for e in errors[expected_failures:]
            if not ("Failed to load resource" in e and any(f"status of {c}" in e and e.rstrip().endswith(u) for c, u in wanted))]

        # A node with a token: the prompt comes first with nothing refused yet; a wrong token is
        # refused with the node's reason beside the prompt (not only in the console).
        if token_base:
            b.goto(token_base + "/")
            b.wait_for("!document.querySelector('#auth').hidden", timeout=30)
            seen["token_prompt"] = b.eval("document.querySelector('#auth').innerText")
            check("token_prompt", "refused" not in seen["token_prompt"])
            b.eval("document.querySelector('#token').value = 'WRONG'")
            b.eval("window.kianaBeforeReload = true; document.querySelector('#token-form').requestSubmit()")
            b.wait_for("!window.kianaBeforeReload && document.readyState === 'complete' && !document.querySelector('#auth').hidden", timeout=30)
            settle(b, "document.querySelector('#auth').innerText.includes('token is wrong')", 10)
            seen["wrong_token"] = b.eval("document.querySelector('#auth').innerText")
            check("wrong_token", "the bearer token is wrong" in seen["wrong_token"])
    print(json.dumps(seen))
    if failed:
        raise SystemExit("checks failed:\n" + "\n".join(failed))


if __name__ == "__main__":
    main()
