"""Render a self-contained HTML page (report/index.html, report/compare/compare.html) in headless
Chromium with the network disabled, save a PNG screenshot and check it is not blank: proves the
page renders offline (no CDN scripts, inline images).

    apt-get install chromium            # Debian; any Chromium/Chrome binary works (--browser)
    python scripts/screenshot_html.py report/compare/compare.html /tmp/compare.png
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def screenshot(html: Path, png: Path, browser: str, width: int = 1300, height: int = 2400) -> None:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--proxy-server=127.0.0.1:9",  # no network: offline check
               f"--window-size={width},{height}", f"--screenshot={png.resolve()}", html.resolve().as_uri()]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("html", type=Path)
    ap.add_argument("png", type=Path)
    ap.add_argument("--browser", default=shutil.which("chromium") or shutil.which("chromium-browser")
                    or shutil.which("google-chrome"))
    a = ap.parse_args(argv)
    if not a.browser:
        print("no Chromium found (apt-get install chromium, or pass --browser)", file=sys.stderr)
        return 2
    screenshot(a.html, a.png, a.browser)
    img = np.asarray(Image.open(a.png).convert("L"), dtype=np.float32)
    # a page with tables and charts has many non-white pixels and real contrast
    ink = float((img < 200).mean())
    print(f"{a.png}: {img.shape[1]}x{img.shape[0]} px, {100 * ink:.1f}% non-white, std {img.std():.1f}")
    if ink < 0.01 or img.std() < 5:
        print("the screenshot is (nearly) blank: the page did not render offline", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
