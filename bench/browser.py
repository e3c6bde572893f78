"""browser.py - headless Chromium (Debian package chromium) for looking at the
dashboard page: dump_dom() runs `chromium --dump-dom` once; Page drives one
browser over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON
messages ending in NUL on fds 3 and 4, no socket, no extra package), so a
page can stay open for real seconds while it polls, then be screenshotted
and read. Used by bench/dashboard-shot (make demo) and the dashboard test."""

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time


def chromium():
    """The chromium binary, or None."""
    for name in ("chromium", "chromium-browser"):
        p = shutil.which(name)
        if p:
            return p
    return None


def _argv(binary, profile, width, height):
    argv = [binary, "--headless=new", "--disable-gpu", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--disable-dev-shm-usage",
            "--hide-scrollbars", "--mute-audio", f"--user-data-dir={profile}",
            f"--window-size={width},{height}"]
    if os.geteuid() == 0:
        argv.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    return argv


def dump_dom(url, budget_ms=5000, timeout=60, width=1400, height=1000):
    """The DOM as Chromium has it after budget_ms of virtual time (scripts
    ran, fetches answered): `chromium --dump-dom`."""
    binary = chromium()
    with tempfile.TemporaryDirectory(prefix="rp-chromium-") as profile:
        argv = _argv(binary, profile, width, height) + [
            f"--virtual-time-budget={budget_ms}", "--dump-dom", url]
        p = subprocess.run(argv, capture_output=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise RuntimeError(f"chromium --dump-dom exited {p.returncode}: "
                           f"{p.stderr.decode(errors='replace')[-800:]}")
    return p.stdout.decode()


class Page:
    """One headless Chromium with one tab, driven over the DevTools protocol.
    with Page(url) as pg: time.sleep(30); pg.screenshot(path); pg.dom()"""

    def __init__(self, url, width=1400, height=1000, scale=1, timeout=30):
        self.url, self.width, self.height, self.scale = url, width, height, scale
        self.timeout = timeout
        self.proc = None
        self._next = 0
        self._buf = b""

    def __enter__(self):
        self.profile = tempfile.mkdtemp(prefix="rp-chromium-")
        to_r, to_w = os.pipe()      # we write commands, chromium reads fd 3
        from_r, from_w = os.pipe()  # chromium writes fd 4, we read
        argv = _argv(chromium(), self.profile, self.width, self.height) + [
            "--remote-debugging-pipe", "about:blank"]

        def fds():
            # Out of the way first (either may be 3 or 4 already), then in
            # place; close_fds is off, as it would close 3 and 4 after this.
            a, b = os.dup(to_r), os.dup(from_w)
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, close_fds=False,
                                     preexec_fn=fds)
        os.close(to_r)
        os.close(from_w)
        self._w = os.fdopen(to_w, "wb", buffering=0)
        self._r = os.fdopen(from_r, "rb", buffering=0)
        tid = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=tid, flatten=True)["sessionId"]
        self.resize(self.height)
        self.call("Page.enable", session=True)
        self.call("Page.navigate", url=self.url, session=True)
        return self

    def __exit__(self, *exc):
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._w.close()
        self._r.close()
        shutil.rmtree(self.profile, ignore_errors=True)
        return False

    def call(self, method, session=False, **params):
        """Send one command; its result (events in between are skipped)."""
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        self._w.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" not in self._buf:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"chromium: no answer to {method}")
                chunk = self._r.read(65536)
                if not chunk:
                    raise RuntimeError(f"chromium closed the pipe ({method})")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            m = json.loads(raw)
            if m.get("id") == self._next:
                if "error" in m:
                    raise RuntimeError(f"chromium: {method}: {m['error']}")
                return m.get("result", {})

    def resize(self, height):
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=self.width,
                  height=height, deviceScaleFactor=self.scale, mobile=False)

    def eval(self, expr):
        r = self.call("Runtime.evaluate", session=True, expression=expr, returnByValue=True)
        return r.get("result", {}).get("value")

    def dom(self):
        return self.eval("document.documentElement.outerHTML")

    def screenshot(self, path, full=True, max_height=2400):
        """A PNG of the page: the whole page (up to max_height CSS pixels)
        when full, else the window."""
        if full:
            h = self.eval("Math.ceil(document.documentElement.scrollHeight)") or self.height
            self.resize(max(self.height, min(int(h), max_height)))
            time.sleep(0.5)  # a frame with the new size (the chart redraws on resize)
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
