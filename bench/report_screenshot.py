"""Open a run's report.html in a real headless browser (Debian's chromium), take a screenshot, and
check that it rendered: a non-blank picture, and the DOM holds the expected sections and plots.

    python bench/report_screenshot.py RUN_DIR [--out report.png]

Needs /usr/bin/chromium (apt-get install chromium); the browser runs with networking disabled
features, so a page that needed the network would render without its plots.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
SECTIONS = ["leaderboard", "learning-curves", "hyperparameters", "predictions", "confusion"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--height", type=int, default=5000)
    args = ap.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        print("chromium not found: apt-get install chromium", file=sys.stderr)
        return 2
    report = (args.run_dir / "report.html").resolve()
    out = (args.out or args.run_dir / "report.png").resolve()
    with tempfile.TemporaryDirectory() as profile:
        base = [browser, *FLAGS, f"--user-data-dir={profile}"]
        subprocess.run(
            [*base, f"--screenshot={out}", f"--window-size=1280,{args.height}", report.as_uri()],
            check=True,
            capture_output=True,
            timeout=120,
        )
        dom = subprocess.run(
            [*base, "--dump-dom", report.as_uri()], check=True, capture_output=True, text=True, timeout=120
        ).stdout
    from PIL import Image

    img = Image.open(out).convert("RGB")
    colors = len(img.getcolors(maxcolors=1 << 20) or [])
    non_white = sum(1 for p in img.resize((320, args.height // 4)).getdata() if p != (255, 255, 255))
    share = non_white / (320 * (args.height // 4))
    found = [s for s in SECTIONS if f'id="{s}"' in dom]
    plots = re.findall(r'<figure class="plot" id="([^"]+)"', dom)
    decoded = dom.count("data:image/png;base64,")
    print(f"screenshot: {out} ({img.width}x{img.height}, {colors} colours, {share:.1%} non-white)")
    print(f"sections rendered: {found} of {SECTIONS}")
    print(f"plots in the DOM: {len(plots)} ({', '.join(plots)}); inline images: {decoded}")
    ok = colors > 50 and share > 0.05 and found == SECTIONS and len(plots) >= 7
    print("rendered: OK" if ok else "rendered: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
