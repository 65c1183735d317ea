"""Open a run's report.html in a real headless browser (Debian's chromium) through the DevTools protocol, as a
person at a 1280 px wide screen would, and check it: the headline is there, every plot rendered, the
leaderboard fits the page, moving the mouse onto a learning curve's point shows that trial's config, and
no request left the machine. Writes a full-page screenshot.

    python bench/report_screenshot.py RUN_DIR [--out report.png]
    python bench/report_screenshot.py --smoke     # a tiny sweep's report (RUN_DIR optional); no chromium: skipped

Needs /usr/bin/chromium (apt-get install chromium). Last line:
``report_screenshot: plots=N/M hover_config=yes|no fits=yes|no external_requests=K png=PATH``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--disable-extensions"]  # fmt: skip
WIDTH = 1280


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Page:
    def __init__(self, ws):
        self.ws, self.n, self.requests, self.events = ws, 0, [], []

    async def call(self, method: str, **params):
        self.n += 1
        mine = self.n
        await self.ws.send_json({"id": mine, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=60)
            if msg.get("id") == mine:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def _event(self, msg):
        if msg.get("method") == "Network.requestWillBeSent":
            self.requests.append(msg["params"]["request"]["url"])
        self.events.append(msg.get("method"))

    async def wait_for(self, method: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while method not in self.events:
            msg = await self.ws.receive_json(timeout=max(0.1, deadline - time.monotonic()))
            self._event(msg)

    async def js(self, expr: str):
        out = await self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        return out["result"].get("value")


async def _check(report: Path, port: int, png: Path) -> dict:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            try:
                async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
                    targets = [t for t in await r.json() if t["type"] == "page"]
                if targets:
                    break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        async with http.ws_connect(targets[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            page = _Page(ws)
            await page.call("Network.enable")
            await page.call("Page.enable")
            metrics = {"width": WIDTH, "deviceScaleFactor": 1, "mobile": False}
            await page.call("Emulation.setDeviceMetricsOverride", height=900, **metrics)
            await page.call("Page.navigate", url=report.resolve().as_uri())
            await page.wait_for("Page.loadEventFired")
            await asyncio.sleep(1.5)  # let Plotly draw
            res: dict = {}
            res["headline"] = await page.js("document.querySelector('#winner')?.textContent || ''")
            res["budget"] = await page.js("document.querySelector('#budget')?.textContent || ''")
            plots = await page.js(
                "[...document.querySelectorAll('[data-plot]')].map(d => [d.dataset.plot, "
                "!!(d.querySelector('.js-plotly-plot') && d.querySelector('.js-plotly-plot')._fullLayout "
                "&& d.querySelector('svg.main-svg'))])"
            )
            res["plots"] = plots
            res["fits"] = await page.js("document.documentElement.scrollWidth <= window.innerWidth")
            res["table_fits"] = await page.js(
                "(() => {const w = document.querySelector('.tablewrap'); return w.scrollWidth <= w.clientWidth})()"
            )
            # the mouse onto the first learning curve's first point
            await page.js("document.querySelector('#curves-val_macro_f1').scrollIntoView({block: 'center'})")
            await asyncio.sleep(0.5)
            box = await page.js(
                "(() => {const p = document.querySelector('#curves-val_macro_f1 .scatterlayer .trace .points path');"
                "const r = p.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]})()"
            )
            for dx in (0, 1, -1):
                await page.call("Input.dispatchMouseEvent", type="mouseMoved", x=box[0] + dx, y=box[1])
                await asyncio.sleep(0.4)
            res["hover"] = await page.js(
                "document.querySelector('#curves-val_macro_f1 .hoverlayer')?.textContent || ''"
            )
            height = await page.js("document.documentElement.scrollHeight")
            await page.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=min(int(height), 16000),
                            deviceScaleFactor=1, mobile=False)  # fmt: skip
            await page.js("window.scrollTo(0, 0)")
            await asyncio.sleep(1.0)
            shot = await page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            png.write_bytes(base64.b64decode(shot["data"]))
            res["requests"] = page.requests
            return res


def tiny_run(root: Path) -> Path:
    """A finished run folder of a sweep that takes seconds (2 trials x 2 epochs of a random-init tiny LLaMA on
    160 synthetic rows), for ``--smoke``."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import synthetic_rows, write_sst_file
    from sentune.spec import parse_job
    from sentune.tuning import run_sweep

    sizes = (("train", 160, 1), ("dev", 40, 2), ("test", 40, 3))
    data = {name: str(write_sst_file(root / f"{name}.txt", synthetic_rows(n, seed))) for name, n, seed in sizes}
    spec = parse_job(
        {
            "name": "smoke",
            "trainable": "llama_torch",
            "data": data,
            "search_space": {"lr": {"grid": [3.0e-3, 1.0e-4]}},
            "params": {"backbone": "random:tiny", "option": "finetune", "epochs": 2, "batch_size": 16, "max_len": 24},
            "search": {"algorithm": "grid"},
            "scheduler": {"type": "fifo"},
            "resources": {"cpus": 1, "workers_per_trial": 1},
            "storage_path": str(root / "results"),
        }
    )
    return run_sweep(spec, progress="quiet").run_dir


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, nargs="?")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--smoke", action="store_true", help="RUN_DIR optional (a tiny sweep's); no chromium: skip, exit 0")
    args = ap.parse_args()
    if args.run_dir is None and not args.smoke:
        ap.error("RUN_DIR is required (or --smoke)")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        if args.smoke:
            print("report_screenshot: skipped (no chromium; apt-get install chromium)")
            return 0
        print("report_screenshot: no chromium (apt-get install chromium)")
        return 2
    if args.run_dir is not None:
        return check(browser, args.run_dir, args.out)
    with tempfile.TemporaryDirectory(prefix="sentune-report-") as tmp:
        run_dir = tiny_run(Path(tmp))
        return check(browser, run_dir, args.out or Path(tmp) / "report.png")


def check(browser: str, run_dir: Path, out: Path | None) -> int:
    """Open ``run_dir``'s report in ``browser``, print what it found; 0 if everything checked out."""
    report = run_dir / "report.html"
    png = out or run_dir / "report.png"
    port = _free_port()
    profile = tempfile.mkdtemp(prefix="sentune-chromium-")
    proc = subprocess.Popen([browser, *FLAGS, f"--remote-debugging-port={port}", f"--user-data-dir={profile}",
                             f"--window-size={WIDTH},900", "about:blank"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        res = asyncio.run(_check(report, port, png))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(profile, ignore_errors=True)
    external = [u for u in res["requests"] if not u.startswith(("file://", "data:", "about:"))]
    rendered = [name for name, ok in res["plots"] if ok]
    hover_config = "lr=" in res["hover"] or "=" in res["hover"].split("epoch")[0]
    print(f"headline: {res['headline'].strip()}")
    print(f"budget:   {res['budget'].strip()}")
    print(f"plots rendered: {len(rendered)}/{len(res['plots'])}: {', '.join(rendered)}")
    print(f"hover on a learning-curve point shows: {res['hover'].strip()[:200]!r}")
    print(f"page fits {WIDTH} px: {res['fits']}; leaderboard fits its box: {res['table_fits']}")
    print(f"requests: {len(res['requests'])}, leaving the machine: {external}")
    print(json.dumps({"screenshot": str(png)}))
    ok = (bool(res["headline"]) and len(rendered) == len(res["plots"]) > 0 and hover_config and res["fits"]
          and not external)  # fmt: skip
    print(
        f"report_screenshot: plots={len(rendered)}/{len(res['plots'])} hover_config={'yes' if hover_config else 'no'} "
        f"fits={'yes' if res['fits'] else 'no'} external_requests={len(external)} png={png}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
