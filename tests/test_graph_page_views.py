"""php/index.php as a page people keep open (issue 16): tiles, ranges, labels, tariff, hover.

Plain HTTP tests check the numbers against the files written here; browser
tests (headless Chromium at desktop and phone sizes) point at drawn readings
with a real pointer / tap and compare the read-out with the file's lines.
Screenshots go to $KEI_TEST_ARTIFACTS when set, else to the test's tmp dir.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import zoneinfo
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import requests

from browser import Browser, browser_missing
from phpserver import PHP, PhpServer
from support import REPO
from test_graph_page import DAY, write_meter_days

pytestmark = pytest.mark.skipif(PHP is None, reason="php not found: apt-get install php-cli")

WEEK = [datetime.date(2026, 5, 18) + datetime.timedelta(days=n) for n in range(3)]   # Mon..Wed
TARIFF_IMPORT = 31.5
TARIFF_EXPORT = 8
# Zones to find one where it is afternoon now, so that "now" and "3 hours ago"
# are the same local day (and a screenshot has most of a day to show).
ZONES = ["Asia/Tokyo", "Europe/London", "America/New_York", "Asia/Kolkata", "America/Los_Angeles",
         "Pacific/Auckland", "Europe/Moscow", "Asia/Bangkok", "America/Sao_Paulo", "Pacific/Honolulu"]


def daytime_zone() -> Tuple[str, datetime.datetime]:
    """(zone, local time now there) with the local hour from 12 to 19."""
    for name in ZONES:
        now = datetime.datetime.now(zoneinfo.ZoneInfo(name)).replace(tzinfo=None)
        if 12 <= now.hour < 20:
            return name, now
    raise AssertionError("no zone in the afternoon")     # the 10 zones cover every hour


def week_files(data: Path) -> Dict[str, float]:
    """Sum files of three days with registers that keep counting, and the 00:00 of day four.

    Returns the forward kWh per day ("YYYY-MM-DD" -> kWh) from the registers."""
    forward, reverse = 1000.0, 50.0
    per_day: Dict[str, float] = {}
    for day in WEEK + [WEEK[-1] + datetime.timedelta(days=1)]:
        lines = []
        start_forward = forward
        for window in range(144 if day in WEEK else 1):
            minute = window * 10
            stamp = "%s %02d:%02d" % (day.strftime("%Y/%m/%d"), minute // 60, minute % 60)
            if minute % 30 == 0:
                lines.append("%s,BR,EA,%.2f\n" % (stamp, forward))
                lines.append("%s,BR,EB,%.2f\n" % (stamp, reverse))
            lines.append("%s,BR,E7,%d\n" % (stamp, 300 + window))
            if window % 3 == 2:
                forward = round(forward + 0.05 + (window % 7) / 100, 2)
                reverse = round(reverse + 0.01, 2)
        (data / ("sum%s-week.txt" % day.strftime("%Y%m%d"))).write_text("".join(lines))
        if day in WEEK:
            per_day[day.isoformat()] = forward - start_forward
    return per_day


def live_files(data: Path, now: datetime.datetime) -> Dict[str, Tuple[str, float]]:
    """Today's raw file: E7 and A,T1 up to a few seconds ago, A,H1 three hours old.

    Returns the last (time, value) of each series."""
    readings = []
    last = {}
    for number in range(60):
        stamp = now - datetime.timedelta(seconds=5 + 10 * (59 - number))
        readings.append((stamp, "BR", "E7", -250 + number))
        readings.append((stamp, "A", "T1", 20 + number / 4))
        old = now - datetime.timedelta(hours=3, seconds=10 * (59 - number))
        readings.append((old, "A", "H1", 40 + number / 2))
    readings.sort(key=lambda r: r[0])
    for stamp, unit, sensor, value in readings:
        last["%s,%s" % (unit, sensor)] = (stamp.strftime("%Y-%m-%d %H:%M:%S"), value)
    text = "".join("%s,%s,%s,%s,x\n" % (stamp.strftime("%Y/%m/%d %H:%M:%S"), unit, sensor,
                                         ("%.2f" % value).rstrip("0").rstrip("."))
                   for stamp, unit, sensor, value in readings)
    (data / ("%s-live.txt" % now.strftime("%Y%m%d"))).write_text(text)
    return last


CONFIG = """<?php
$config = require %r;
$config['series'] = [
    'A,T1' => ['label' => 'Living room', 'unit' => '°C'],
    'BR,E7' => ['label' => 'Power at the meter', 'unit' => 'W'],
];
$config['tariff'] = ['import' => %r, 'export' => %r, 'currency' => 'yen'];
return $config;
"""


@pytest.fixture(scope="module")
def views(tmp_path_factory):
    root = tmp_path_factory.mktemp("views")
    data = root / "data"
    data.mkdir()
    truth = write_meter_days(data)
    zone, now = daytime_zone()
    live = live_files(data, now)
    per_day = week_files(data)
    # php/ with a config.php that sets labels and a tariff on top of the shipped one.
    docroot = root / "php"
    docroot.mkdir()
    shutil.copy(REPO / "php" / "index.php", docroot / "index.php")
    (docroot / "config.php").write_text(CONFIG % (str(REPO / "php" / "config.php"),
                                                  TARIFF_IMPORT, TARIFF_EXPORT))
    plain = PhpServer(REPO / "php", env={"KEI_DATA_DIR": str(data), "TZ": zone})
    configured = PhpServer(docroot, env={"KEI_DATA_DIR": str(data), "TZ": zone})
    try:
        plain.start()
        configured.start()
        yield {"url": plain.url(""), "configured": configured.url(""), "data": data, "truth": truth,
               "now": now, "live": live, "per_day": per_day}
        assert not plain.php_errors() and not configured.php_errors()
    finally:
        plain.close()
        configured.close()


def attributes(html: str, tag: str, cls: str) -> List[Dict[str, str]]:
    """The attributes of each <tag class="cls ..."> in ``html``."""
    found = []
    for match in re.finditer(r"<%s ([^>]*)>" % tag, html):
        attrs = dict(re.findall(r'([a-z0-9-]+)="([^"]*)"', match.group(1)))
        if cls in attrs.get("class", "").split():
            found.append(attrs)
    return found


def fetch(url: str, **params) -> str:
    response = requests.get(url, params=params, timeout=20)
    assert response.status_code == 200, response.text[:500]
    return response.text


def tiles(html: str) -> Dict[str, Dict[str, str]]:
    found = {}
    for match in re.finditer(r'<div class="tile( stale)?" ([^>]*)>(.*?)</div>', html, re.S):
        attrs = dict(re.findall(r'([a-z-]+)="([^"]*)"', match.group(2)))
        attrs["stale"] = bool(match.group(1))
        attrs["text"] = re.sub(r"<[^>]+>", " ", match.group(3))
        found["%s,%s" % (attrs["data-unit"], attrs["data-sensor"])] = attrs
    return found


# -- tiles, age, refresh, a partial day

def test_tiles_show_the_latest_value_and_age_and_mark_stale_ones(views):
    html = fetch(views["url"], base="live")
    found = tiles(html)
    assert set(found) == {"BR,E7", "A,T1", "A,H1"}
    for key, (stamp, value) in views["live"].items():
        assert found[key]["data-time"] == stamp
        assert float(found[key]["data-value"]) == value
    assert not found["BR,E7"]["stale"] and not found["A,T1"]["stale"]
    assert found["A,H1"]["stale"] and "stale: 3 h ago" in found["A,H1"]["text"]
    assert 0 <= int(found["A,T1"]["data-age"]) < 120
    assert 3 * 3600 <= int(found["A,H1"]["data-age"]) < 3 * 3600 + 120
    # The meter's power says which way it flows, in a householder's words.
    assert float(found["BR,E7"]["data-value"]) < 0
    assert "Exporting to the grid" in found["BR,E7"]["text"] and "-" not in found["BR,E7"]["text"]


def test_a_page_showing_today_refreshes_itself_and_a_past_day_does_not(views):
    assert '<meta http-equiv="refresh" content="60">' in fetch(views["url"], base="live")
    assert 'http-equiv="refresh"' not in fetch(views["url"], base="home", date="20260520")


def test_a_partial_day_axis_spans_only_its_hours(views):
    html = fetch(views["url"], base="live")
    now = views["now"]
    first = now - datetime.timedelta(hours=3, seconds=590)      # the oldest H1 reading
    x0 = first.hour * 3600
    x1 = min(86400, (now.hour + 1) * 3600)
    for svg in attributes(html, "svg", "chart"):
        assert (int(svg["data-x0"]), int(svg["data-x1"])) == (x0, x1)
    hours = re.findall(r'class="xlabel">(\d\d):00<', html.split('data-chart="power"')[1].split("</svg>")[0])
    assert int(hours[0]) * 3600 >= x0 and int(hours[-1]) * 3600 <= x1 and len(hours) >= 4
    # A full day keeps 00:00-24:00.
    full = fetch(views["url"], base="home", date="20260520")
    assert {(s["data-x0"], s["data-x1"]) for s in attributes(full, "svg", "chart")} == {("0", "86400")}


# -- ranges

def bars(html: str, direction: str = "forward") -> Dict[int, float]:
    return {int(b["data-slot"]): float(b["data-kwh"]) for b in attributes(html, "rect", "bar")
            if b["data-direction"] == direction}


def total(html: str, direction: str = "forward") -> float:
    return float(re.search(r'data-day-total-%s="([0-9.]+)"' % direction, html).group(1))


def test_week_month_and_year_show_daily_and_monthly_energy(views):
    per_day = views["per_day"]
    days = {}
    for day in WEEK:
        html = fetch(views["url"], base="week", date=day.strftime("%Y%m%d"))
        days[day] = total(html)
        assert days[day] == pytest.approx(per_day[day.isoformat()], abs=1e-4)
        assert len(bars(html)) == 48
    week = fetch(views["url"], base="week", date="20260520", range="week")
    assert "<strong>Week of 2026-05-18</strong>" in week
    assert bars(week) == pytest.approx({0: days[WEEK[0]], 1: days[WEEK[1]], 2: days[WEEK[2]]}, abs=2e-4)
    assert total(week) == pytest.approx(sum(days.values()), abs=1e-3)
    assert "Energy per day (kWh)" in week
    month = fetch(views["url"], base="week", date="20260519", range="month")
    assert bars(month) == pytest.approx({17: days[WEEK[0]], 18: days[WEEK[1]], 19: days[WEEK[2]]}, abs=2e-4)
    year = fetch(views["url"], base="week", date="20260519", range="year")
    assert bars(year) == pytest.approx({4: sum(days.values())}, abs=1e-3)
    assert "Energy per month (kWh)" in year
    # Longer ranges draw the averages over the whole range.
    (power,) = [s for s in attributes(week, "path", "series") if s["data-sensor"] == "E7"]
    # (and the first window of Thursday, whose file holds the 00:00 registers)
    assert (power["data-kind"], power["data-points"]) == ("avg", str(3 * 144 + 1))
    (svg,) = [s for s in attributes(week, "svg", "chart") if s["data-chart"] == "power"]
    assert (svg["data-start"], svg["data-x0"], svg["data-x1"]) == ("2026-05-18", "0", str(7 * 86400))


def test_range_links_and_navigation(views):
    html = fetch(views["url"], base="week", date="20260520", range="month")
    links = {a["data-range"]: a["href"] for a in (dict(re.findall(r'([a-z-]+)="([^"]*)"', m))
                                                  for m in re.findall(r"<a (data-range[^>]*)>", html))}
    assert links == {"day": "?date=20260520&amp;base=week", "week": "?date=20260520&amp;base=week&amp;range=week",
                     "month": "?date=20260520&amp;base=week&amp;range=month",
                     "year": "?date=20260520&amp;base=week&amp;range=year"}
    assert 'href="?date=20260401&amp;base=week&amp;range=month"' in html      # previous month
    assert 'href="?date=20260601&amp;base=week&amp;range=month"' in html
    response = requests.get(views["url"], params={"range": "decade"}, timeout=10)
    assert response.status_code == 400 and "The range must be day, week, month or year." in response.text


# -- labels, units, import/export words, tariff

def test_labels_units_and_a_tariff_from_config_php(views):
    html = fetch(views["configured"], base="home", date="20260520")
    titles = re.findall(r"<h2>([^<]*)</h2>", html)
    assert titles == ["Energy per half-hour (kWh)", "Power at the meter (W)", "Phase currents (A)",
                      "Living room (°C)"]
    forward, reverse = total(html, "forward"), total(html, "reverse")
    cost = re.search(r'data-day-total-forward="[0-9.]+" data-slots="48" data-cost="([0-9.]+)"', html)
    assert float(cost.group(1)) == pytest.approx(forward * TARIFF_IMPORT, abs=0.01)
    credit = re.search(r'data-day-total-reverse="[0-9.]+" data-slots="48" data-cost="([0-9.]+)"', html)
    assert float(credit.group(1)) == pytest.approx(reverse * TARIFF_EXPORT, abs=0.01)
    assert "at 31.5 yen/kWh" in html and "at 8 yen/kWh" in html
    assert "Imported from the grid: <strong>" in html and "Exported to the grid: <strong>" in html
    assert 'class="name">Living room</span>' in html
    assert "Unit A, sensor T1" not in html
    # Without config: the ids, no cost, and still import/export words for the meter.
    plain = fetch(views["url"], base="home", date="20260520")
    assert "data-cost" not in plain and "Unit A, sensor T1" in plain
    assert "Imported from the grid" in plain and "Reverse" not in plain and "Forward" not in plain


def test_the_page_allows_only_its_own_script(views):
    response = requests.get(views["url"], params={"base": "home", "date": "20260520"}, timeout=10)
    policy = response.headers["Content-Security-Policy"]
    nonce = re.search(r"script-src 'nonce-([A-Za-z0-9+/=]+)'", policy).group(1)
    assert re.findall(r"<script( [^>]*)?>", response.text) == [' nonce="%s"' % nonce]
    again = requests.get(views["url"], params={"base": "home", "date": "20260520"}, timeout=10)
    assert nonce not in again.headers["Content-Security-Policy"]          # per request
    assert "default-src 'none'" in policy and "unsafe-inline" not in policy.split("script-src")[1]


# -- in a real browser, desktop and phone

def file_values(data: Path) -> Dict[Tuple[str, str, str], set]:
    """(kind, unit, sensor) -> {(time, value)} as written in the files of DAY, base home."""
    found: Dict[Tuple[str, str, str], set] = {}
    stamp = DAY.strftime("%Y%m%d")
    for line in (data / ("%s-home.txt" % stamp)).read_text().splitlines():
        when, unit, sensor, value = line.split(",")[:4]
        found.setdefault(("raw", unit, sensor), set()).add((when.replace("/", "-"), float(value)))
    for line in (data / ("sum%s-home.txt" % stamp)).read_text().splitlines():
        when, unit, sensor, value = line.split(",")
        found.setdefault(("avg", unit, sensor), set()).add((when.replace("/", "-") + ":00", float(value)))
    return found


VERTEX_ON_SCREEN = """
var path = document.querySelectorAll('svg.chart[data-chart="' + arguments[0] + '"] path.series')[arguments[1]];
var svg = path.ownerSVGElement;
svg.scrollIntoView({block: 'center'});
var i = arguments[2] < 0 ? path.getAttribute('data-t').split(' ').length + arguments[2] : arguments[2];
var xy = path.getAttribute('d').match(/[ML][-0-9.]+ [-0-9.]+/g)[i].slice(1).split(' ');
var point = svg.createSVGPoint();
point.x = +xy[0]; point.y = +xy[1];
var screen = point.matrixTransform(svg.getScreenCTM());
return {x: screen.x, y: screen.y, t: +path.getAttribute('data-t').split(' ')[i],
        v: path.getAttribute('data-v').split(' ')[i]};
"""

READOUT = """
var box = document.querySelector('svg.chart[data-chart="' + arguments[0] + '"]').parentNode.querySelector('.readout');
return box && {time: box.dataset.time, value: box.dataset.value, sensor: box.dataset.sensor,
               kind: box.dataset.kind, text: box.textContent, visible: box.getBoundingClientRect().width > 0};
"""

SIZES = {"desktop": (1100, 900, False), "phone": (390, 844, True)}


@pytest.fixture(params=sorted(SIZES))
def sized_browser(request):
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    width, height, mobile = SIZES[request.param]
    with Browser(width=width, height=height, mobile=mobile) as chromium:
        yield request.param, chromium


@pytest.fixture
def artifacts(tmp_path) -> Path:
    chosen = os.environ.get("KEI_TEST_ARTIFACTS")
    path = Path(chosen) if chosen else tmp_path / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_hover_or_tap_shows_the_files_values_at_desktop_and_phone_size(views, sized_browser, artifacts):
    size, browser = sized_browser
    browser.clear_logs()
    url = views["configured"] + "?date=20260520&base=home"
    browser.get(url)
    layout = browser.execute(
        "return {tiles: document.querySelectorAll('#now .tile').length,"
        " ranges: Array.from(document.querySelectorAll('nav.ranges a')).map(a => a.dataset.range),"
        " charts: Array.from(document.querySelectorAll('svg.chart')).map(s => s.getBoundingClientRect().width),"
        " overflow: document.documentElement.scrollWidth - window.innerWidth, width: window.innerWidth}")
    assert layout["tiles"] == 6               # E7, E8R, E8T, E0, E3, T1
    assert layout["ranges"] == ["day", "week", "month", "year"]
    assert len(layout["charts"]) == 4
    assert layout["overflow"] <= 0            # nothing wider than the screen
    if size == "phone":
        assert layout["width"] < 500
    expected = file_values(views["data"])
    checked = 0
    for chart, index, sensor in (("power", 0, "E7"), ("current", 2, "E8T"), ("other-0", 0, "T1")):
        for vertex in (0, 517, -1):
            target = browser.execute(VERTEX_ON_SCREEN, chart, index, vertex)
            browser.point_at(target["x"], target["y"])
            shown = browser.execute(READOUT, chart)
            assert shown and shown["visible"], (chart, vertex)
            key = (shown["kind"], "BR" if sensor != "T1" else "A", shown["sensor"])
            assert (shown["time"], float(shown["value"])) in expected[key], (chart, vertex, shown)
            assert shown["value"] in shown["text"] and shown["time"] in shown["text"]
            checked += 1
    assert checked == 9
    assert browser.console_errors() == []
    requested = browser.requested_urls()
    assert url in requested
    # chrome:// pages are the browser's own (the phone emulation loads some), not the network.
    assert [u for u in requested if not u.startswith((views["configured"], "data:", "chrome://"))] == []
    shot = browser.screenshot(artifacts / ("graph-page-%s.png" % size))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_week_and_year_ranges_in_the_browser(views, sized_browser):
    size, browser = sized_browser
    browser.clear_logs()
    for kind, bars_expected in (("week", 3), ("year", 1)):
        browser.get(views["url"] + "?date=20260519&base=week&range=" + kind)
        found = browser.execute(
            "return {bars: document.querySelectorAll('rect.bar[data-direction=forward]').length,"
            " current: document.querySelector('nav.ranges a.current').dataset.range}")
        assert found == {"bars": bars_expected, "current": kind}
    assert browser.console_errors() == []
