"""Make docs/graph-page.png, the README's picture of the graph page.

    python3 bench/screenshot_graph_page.py [--out docs/graph-page.png]

Writes the tests' realistic day (tests/test_graph_page.py: a B-route meter
with solar export and a temperature sensor) up to now, in a time zone where
it is afternoon now, to a temporary directory (so the tiles are fresh and the
axis fits the partial day), serves
a copy of php/ whose config.php adds labels and a tariff, and saves what
headless Chromium (tests/browser.py; apt-get install chromium
chromium-driver) shows at desktop width: the tiles, the energy bars and the
first charts.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from browser import Browser, browser_missing  # noqa: E402
from phpserver import PhpServer  # noqa: E402
from test_graph_page import meter_day, write_day  # noqa: E402
from test_graph_page_views import daytime_zone  # noqa: E402

CONFIG = """<?php
$config = require %r;
$config['series'] = ['A,T1' => ['label' => 'Living room', 'unit' => '°C']];
$config['tariff'] = ['import' => 31, 'export' => 16, 'currency' => 'yen'];
return $config;
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "docs" / "graph-page.png"))
    args = parser.parse_args()
    reason = browser_missing()
    if reason:
        sys.exit(reason)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        zone, now = daytime_zone()
        readings, _ = meter_day(now.date())
        write_day(data, now.date(), "home", [r for r in readings if r[0] <= now])
        docroot = Path(tmp) / "php"
        docroot.mkdir()
        shutil.copy(REPO / "php" / "index.php", docroot)
        (docroot / "config.php").write_text(CONFIG % str(REPO / "php" / "config.php"))
        with PhpServer(docroot, env={"KEI_DATA_DIR": str(data), "TZ": zone}) as server, \
                Browser(width=1000, height=1150) as browser:
            browser.get(server.url("?base=home"))
            shot = browser.screenshot(Path(args.out), full_page=False)
    print("%s: %d bytes" % (shot, shot.stat().st_size))


if __name__ == "__main__":
    main()
