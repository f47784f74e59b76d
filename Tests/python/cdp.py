"""Minimal Chrome DevTools Protocol driver for Debian's headless Chromium.

Needs the stdlib, PyPI websocket-client and `apt-get install chromium`.
    with Browser(width=390, height=844, mobile=True) as b:
        b.goto("http://127.0.0.1:8000/")
        b.eval("document.querySelector('button').click()")
        b.wait_for("document.body.innerText.includes('done')", timeout=5)
        b.screenshot("/tmp/shot.png")
        assert not b.console_errors()
Every wait is bounded; close() (or leaving the `with`) kills the whole
chromium process group and removes the temporary profile.
"""
import atexit, base64, ctypes, json, os, shutil, signal, subprocess, tempfile, time
import urllib.request
from contextlib import suppress

import websocket  # PyPI: websocket-client


class CDPError(RuntimeError):  # a DevTools command failed, or the browser died
    pass


class JSError(CDPError):  # JS run by Browser.eval threw; message = JS exception text
    pass


def _die_with_parent():  # runs in the child: SIGKILL chromium if Python dies
    with suppress(OSError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Browser:
    def __init__(self, width=1280, height=800, mobile=False, scale=1,
                 binary="chromium", timeout=30, args=()):
        self.timeout = timeout  # default bound for every command / wait
        self.proc = self.ws = None
        self._id, self._events, self._errors = 0, [], []
        self._tmp = tempfile.mkdtemp(prefix="cdp-")
        profile = os.path.join(self._tmp, "profile")
        self.log_path = os.path.join(self._tmp, "chromium.log")  # chromium stdout+stderr
        atexit.register(self.close)
        try:
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    [binary, "--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--no-first-run", "--remote-debugging-port=0",
                     "--user-data-dir=" + profile, f"--window-size={width},{height}",
                     *args, "about:blank"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    start_new_session=True, preexec_fn=_die_with_parent)
            port = self._read_port(os.path.join(profile, "DevToolsActivePort"))
            # No Origin header: Chromium >= 111 vets it (--remote-allow-origins); none is always OK.
            self.ws = websocket.create_connection(self._page_ws_url(port), timeout=timeout,
                                                  suppress_origin=True)
            for domain in ("Page", "Runtime", "Log"):
                self.send(domain + ".enable")
            self.send("Page.setLifecycleEventsEnabled", enabled=True)
            # new headless keeps ~143px of invisible browser UI inside --window-size,
            # so pin the viewport to exactly width x height.
            self.set_viewport(width, height, mobile=mobile, scale=scale)
        except BaseException:
            self.close()
            raise

    def _log_tail(self, n=15):
        with suppress(OSError), open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
        return ""

    def _read_port(self, path):  # file holds "<port>\n<ws path>" once DevTools listens
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CDPError(f"chromium exited with {self.proc.returncode}:\n{self._log_tail()}")
            with suppress(OSError), open(path) as f:
                if (first := f.readline().strip()).isdigit():  # may be half-written
                    return int(first)
            time.sleep(0.05)
        raise CDPError(f"no DevToolsActivePort after {self.timeout}s:\n{self._log_tail()}")

    def _page_ws_url(self, port):  # /json also lists "browser_ui" targets: take a "page"
        deadline, last = time.monotonic() + self.timeout, None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=5) as r:
                    last = json.load(r)
                pages = [t for t in last if t.get("type") == "page" and "webSocketDebuggerUrl" in t]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            except OSError as e:
                last = e
            time.sleep(0.1)
        raise CDPError(f"no page target on port {port}; last /json: {last!r}")

    def _recv(self, deadline):
        """Read one message, buffering events; TimeoutError at deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        self.ws.settimeout(remaining)
        try:
            msg = json.loads(self.ws.recv())
        except websocket.WebSocketTimeoutException:
            raise TimeoutError from None
        except (websocket.WebSocketException, OSError) as e:
            raise CDPError(f"DevTools connection lost: {e}\n{self._log_tail()}") from e
        if "method" in msg:
            method, p = msg["method"], msg.get("params", {})
            self._events = self._events[-999:] + [(method, p)]  # bounded buffer
            if method == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                self._errors.append(d.get("exception", {}).get("description") or d.get("text"))
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                self._errors.append("console.error: " + " ".join(
                    str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
            elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
                self._errors.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return msg

    def send(self, method, timeout=None, **params):
        """Send a raw CDP command; return its result dict (CDPError on protocol error)."""
        self._id += 1
        mid, timeout = self._id, timeout or self.timeout
        deadline = time.monotonic() + timeout
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        try:
            while (msg := self._recv(deadline)).get("id") != mid:
                pass
        except TimeoutError:
            raise TimeoutError(f"{method}: no reply within {timeout}s") from None
        if "error" in msg:
            raise CDPError(f"{method} failed: {msg['error'].get('message')} {msg['error'].get('data', '')}")
        return msg.get("result", {})

    def wait_event(self, method, pred=lambda p: True, timeout=None):
        """Wait for (and consume up to) an event `method` whose params satisfy pred."""
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        for i, (m, p) in enumerate(self._events):  # already buffered?
            if m == method and pred(p):
                del self._events[: i + 1]
                return p
        while True:
            try:
                msg = self._recv(deadline)
            except TimeoutError:
                raise TimeoutError(f"event {method} not seen within {timeout}s") from None
            if msg.get("method") == method and pred(msg.get("params", {})):
                self._events.clear()  # it was the newest buffered event
                return msg["params"]

    def goto(self, url, timeout=None):
        """Navigate and wait for the load event of that very navigation (by loaderId)."""
        self._events.clear()
        deadline = time.monotonic() + (timeout or self.timeout)
        r = self.send("Page.navigate", url=url, timeout=timeout)
        if r.get("errorText"):
            raise CDPError(f"navigate {url}: {r['errorText']}")
        if r.get("loaderId"):  # absent for same-document (#hash) navigations
            self.wait_event("Page.lifecycleEvent", timeout=max(0.1, deadline - time.monotonic()),
                            pred=lambda p: p["name"] == "load" and p["loaderId"] == r["loaderId"])

    def eval(self, js, timeout=None):
        """Evaluate JS (promises awaited); return its JSON value, JSError if it throws."""
        r = self.send("Runtime.evaluate", expression=js, returnByValue=True,
                      awaitPromise=True, userGesture=True, timeout=timeout)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise JSError(d.get("exception", {}).get("description") or d.get("text", "JS error"))
        return r["result"].get("value")

    def wait_for(self, js_expr, timeout=10, interval=0.1):
        """Poll js_expr until truthy and return it; TimeoutError shows the last value."""
        deadline, last = time.monotonic() + timeout, None
        while True:
            try:
                if last := self.eval(js_expr, timeout=max(1, deadline - time.monotonic())):
                    return last
            except CDPError as e:  # JS threw / context swapped by a navigation: retry
                if self.proc.poll() is not None:
                    raise
                last = e
            if time.monotonic() >= deadline:
                raise TimeoutError(f"wait_for({js_expr!r}) timed out after {timeout}s; last value: {last!r}")
            time.sleep(interval)

    def screenshot(self, path=None):
        """Capture the viewport as PNG; write it to path if given; return the bytes."""
        png = base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])
        if path:
            with open(path, "wb") as f:
                f.write(png)
        return png

    def set_viewport(self, width, height, mobile=False, scale=1):
        """Emulate a viewport; mobile=True also enables touch + mobile meta-viewport."""
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=scale, mobile=mobile)
        self.send("Emulation.setTouchEmulationEnabled", enabled=mobile)

    def console_errors(self):
        """Uncaught exceptions, console.error calls and error log entries so far."""
        with suppress(TimeoutError):  # drain events already queued on the socket
            while True:
                self._recv(time.monotonic() + 0.05)
        return list(self._errors)

    def close(self):
        """Close the browser, reap its process group, drop the profile. Idempotent."""
        if self.ws is not None:
            with suppress(Exception):
                self.send("Browser.close", timeout=3)
            with suppress(Exception):
                self.ws.close()
            self.ws = None
        if self.proc is not None:
            pgid = self.proc.pid  # start_new_session=True: pgid == pid
            with suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)  # normal exit after Browser.close
            for sig in (signal.SIGTERM, signal.SIGKILL):  # then the whole group
                with suppress(ProcessLookupError, subprocess.TimeoutExpired):
                    os.killpg(pgid, sig)
                    self.proc.wait(3)
            # Orphaned helpers are reaped by init (up to ~1.5s in some containers).
            deadline = time.monotonic() + 3
            with suppress(ProcessLookupError):
                while time.monotonic() < deadline:
                    os.killpg(pgid, 0)
                    time.sleep(0.05)
            self.proc = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        atexit.unregister(self.close)

    def __enter__(self): return self  # noqa: E704

    def __exit__(self, *exc): self.close()  # noqa: E704
