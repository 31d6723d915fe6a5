#!/usr/bin/env python3
"""The status page as an operator sees it, in real time: headless Chromium at 1400x1000 opens the page,
lets it poll for a while on the wall clock (not on virtual time, which the tests use), then reports what
the page shows (requests/s, error rate, latency, each scaling group and whether it is on the first
screen) and writes a screenshot.

    deploy/loadtest/page-check.py http://127.0.0.1:9901/ --wait 7 --screenshot /tmp/page.png

Run it while a load generator runs and compare its rate with the page's. Needs `chromium` and the
`websocket-client` module (`pip install websocket-client`).
"""

import argparse
import base64
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket

WIDTH, HEIGHT = 1400, 1000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_json(url, deadline):
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return json.load(r)
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


class Page:
    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=30)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return r.get("result", {}).get("value")


READ = r"""
(() => {
  const text = (sel) => document.querySelector(sel)?.textContent.trim() ?? null;
  const tiles = {};
  for (const t of document.querySelectorAll("#summary .tile")) {
    tiles[t.querySelector(".label").textContent.trim()] = {
      value: t.querySelector(".value").textContent.trim(), sub: t.querySelector(".sub").textContent.trim() };
  }
  const groups = [...document.querySelectorAll("[data-overview]")].map((a) => {
    const r = a.getBoundingClientRect();
    return { name: a.dataset.overview, text: a.textContent.replace(/\s+/g, " ").trim(),
             top: Math.round(r.top), bottom: Math.round(r.bottom), on_first_screen: r.bottom <= innerHeight };
  });
  const cards = [...document.querySelectorAll("[data-scaling-group]")].map((c) => ({
    name: c.dataset.scalingGroup, top: Math.round(c.getBoundingClientRect().top) }));
  return { viewport: [innerWidth, innerHeight], connection: text("#conn-text"), tiles,
           scaling_overview: groups, scaling_cards: cards };
})()
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--wait", type=float, default=7.0, help="seconds of polling before reading")
    ap.add_argument("--screenshot", default="page.png")
    args = ap.parse_args()

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        sys.exit("chromium not found (apt-get install chromium)")
    port = free_port()
    profile = tempfile.mkdtemp(prefix="page-check-")
    browser = subprocess.Popen(
        [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", f"--remote-debugging-port={port}",
         f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        targets = wait_json(f"http://127.0.0.1:{port}/json/list", time.time() + 15)
        page = Page(next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"])
        page.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT,
                  deviceScaleFactor=1, mobile=False)
        page.call("Page.enable")
        page.call("Page.navigate", url=args.url)
        time.sleep(args.wait)
        seen = page.js(READ)
        shot = page.call("Page.captureScreenshot", format="png")
        with open(args.screenshot, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        seen["screenshot"] = args.screenshot
        print(json.dumps(seen, indent=2))
    finally:
        browser.terminate()
        browser.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
