"""php/index.php, the graph page, served by a real ``php -S`` over generated day files.

Plain HTTP tests (requests) check the numbers, escaping and parameter checks;
the browser test drives headless Chromium (tests/browser.py) to check what a
user's browser does with the page: no console error, the expected series and
points in the DOM, no request leaving 127.0.0.1, and a screenshot in
$KEI_TEST_ARTIFACTS (when set) or the test's tmp dir.
"""

from __future__ import annotations

import datetime
import math
import os
import random
import re
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import requests

from browser import Browser, browser_missing
from keilib.record import Record, format_value
from phpserver import PHP, PhpServer
from support import REPO

pytestmark = pytest.mark.skipif(PHP is None, reason="php not found: apt-get install php-cli")

DAY = datetime.date(2026, 5, 20)
BASE = "home"

Reading = Tuple[datetime.datetime, str, str, float]


def _at(day: datetime.date, seconds: float) -> datetime.datetime:
    return datetime.datetime.combine(day, datetime.time()) + datetime.timedelta(seconds=seconds)


def meter_day(day: datetime.date, seed: int = 1) -> Tuple[List[Reading], Dict[str, float]]:
    """A realistic day of a B-route meter plus one serial temperature sensor.

    E7 every 10 s (8,640), E8R/E8T every 30 s, E0/E3 every 300 s, EA/EB on
    every half-hour (meter timestamps), A,T1 every 60 s.  Power goes negative
    around noon (solar export).  Returns the readings and the true energy
    (kWh) imported and exported over the day.
    """
    rng = random.Random(seed)
    readings: List[Reading] = []
    forward = 5123.4   # kWh on the registers at midnight
    reverse = 210.0
    currents: Tuple[float, float] = (0.0, 0.0)
    kettle_until = -1
    for step in range(8640):
        seconds = step * 10
        hour = seconds / 3600
        load = 280 + 220 * math.sin(math.pi * (hour - 6) / 12) ** 2 + rng.uniform(-30, 30)
        if kettle_until < seconds and rng.random() < 0.002:
            kettle_until = seconds + rng.randint(2, 8) * 60
        if seconds < kettle_until:
            load += 1200
        solar = max(0.0, 900 * math.sin(math.pi * (hour - 7) / 10)) if 7 <= hour <= 17 else 0.0
        power = round(load - solar)
        stamp = _at(day, seconds)
        if seconds % 1800 == 0:
            readings.append((stamp, "BR", "EA", round(forward, 2)))
            readings.append((stamp, "BR", "EB", round(reverse, 2)))
        readings.append((stamp + datetime.timedelta(seconds=3), "BR", "E7", power))
        if seconds % 30 == 0:
            currents = (round(max(power, 0) / 200 + 0.4, 1), round(max(power, 0) / 220 + 0.3, 1))
            readings.append((stamp + datetime.timedelta(seconds=4), "BR", "E8R", currents[0]))
            readings.append((stamp + datetime.timedelta(seconds=4), "BR", "E8T", currents[1]))
        if seconds % 300 == 0:
            readings.append((stamp + datetime.timedelta(seconds=5), "BR", "E0", round(forward, 2)))
            readings.append((stamp + datetime.timedelta(seconds=5), "BR", "E3", round(reverse, 2)))
        if seconds % 60 == 0:
            temperature = 18 + 6 * math.sin(math.pi * (hour - 9) / 12) + rng.uniform(-0.2, 0.2)
            readings.append((stamp + datetime.timedelta(seconds=7), "A", "T1", round(temperature, 2)))
        # The registers count what flows during the next 10 s.
        if power > 0:
            forward += power * 10 / 3600000
        else:
            reverse += -power * 10 / 3600000
    return readings, {"forward": forward, "reverse": reverse}


def raw_text(readings: List[Reading]) -> str:
    return "".join(Record(stamp, unit, sensor, value).to_raw_line() + "\n"
                   for stamp, unit, sensor, value in sorted(readings, key=lambda r: r[0]))


def sum_text(readings: List[Reading]) -> str:
    """10-minute averages as FileRecorder writes them (one block per window)."""
    windows: Dict[datetime.datetime, Dict[Tuple[str, str], List[float]]] = {}
    for stamp, unit, sensor, value in sorted(readings, key=lambda r: r[0]):
        start = stamp.replace(minute=stamp.minute - stamp.minute % 10, second=0)
        windows.setdefault(start, {}).setdefault((unit, sensor), []).append(value)
    lines = []
    for start in sorted(windows):
        for (unit, sensor), values in windows[start].items():
            lines.append("%s,%s,%s,%s\n" % (start.strftime("%Y/%m/%d %H:%M"), unit, sensor,
                                            format_value(sum(values) / len(values))))
    return "".join(lines)


def write_day(directory: Path, day: datetime.date, base: str, readings: List[Reading],
              raw: bool = True) -> None:
    stamp = day.strftime("%Y%m%d")
    (directory / ("sum%s-%s.txt" % (stamp, base))).write_text(sum_text(readings))
    if raw:
        (directory / ("%s-%s.txt" % (stamp, base))).write_text(raw_text(readings))


def write_meter_days(directory: Path, base: str = BASE, day: datetime.date = DAY) -> Dict[str, float]:
    """``day`` in full, and the next day's first minutes (its 00:00 EA/EB)."""
    readings, registers = meter_day(day)
    write_day(directory, day, base, readings)
    midnight = _at(day + datetime.timedelta(days=1), 0)
    write_day(directory, day + datetime.timedelta(days=1), base, [
        (midnight, "BR", "EA", round(registers["forward"], 2)),
        (midnight, "BR", "EB", round(registers["reverse"], 2)),
        (midnight + datetime.timedelta(seconds=3), "BR", "E7", 300),
    ])
    first = {"forward": 5123.4, "reverse": 210.0}
    return {name: round(registers[name], 2) - first[name] for name in first}


def e0_only_days(directory: Path, base: str) -> float:
    """E0 every 300 s (no EA) from the previous day's last hour to the next
    day's first hour; returns the true kWh of DAY."""
    start = _at(DAY, -3600)
    register = 800.0
    at_midnight = {}
    by_day: Dict[datetime.date, List[Reading]] = {}
    for step in range((86400 + 7200) // 60):
        stamp = start + datetime.timedelta(seconds=step * 60)
        if stamp == _at(DAY, 0) or stamp == _at(DAY, 86400):
            at_midnight[stamp] = register
        if step % 5 == 0:
            reading = (stamp + datetime.timedelta(seconds=2), "BR", "E0", round(register, 4))
            by_day.setdefault(stamp.date(), []).append(reading)
        register += (0.4 + 0.3 * math.sin(step / 90)) / 60     # 0.1 .. 0.7 kW
    for day, readings in by_day.items():
        write_day(directory, day, base, readings)
    return at_midnight[_at(DAY, 86400)] - at_midnight[_at(DAY, 0)]


HOSTILE_UNIT = "<script>alert(1)</script>"
HOSTILE_SENSOR = '"><img src=x onerror=alert(2)>&amp;'
SECRET = "SECRET-MARKER-7d1f"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A data directory with several bases, and php -S serving php/ over it."""
    root = tmp_path_factory.mktemp("graph")
    data = root / "data"
    data.mkdir()
    truth = write_meter_days(data)
    truth["e0only"] = e0_only_days(data, "e0only")
    stamp = DAY.strftime("%Y/%m/%d")
    (data / "sum20260520-evil.txt").write_text(
        "%s 10:00,%s,%s,1.5\n%s 10:10,%s,%s,2.5\n" % (stamp, HOSTILE_UNIT, HOSTILE_SENSOR,
                                                       stamp, HOSTILE_UNIT, HOSTILE_SENSOR))
    (data / "20260520-messy.txt").write_text("".join([
        "%s 10:00:00,A,T1,20.5,x\n" % stamp,
        "garbage line\n",
        "%s 10:00:10,A,T1,not-a-number,x\n" % stamp,
        "%s 25:00:10,A,T1,3,x\n" % stamp,                 # no such hour
        "2026/05/19 10:00:20,A,T1,4,x\n",                 # another day
        "%s 10:00:30,A,T1,INF,x\n" % stamp,
        "%s 10:00:40,A,T1,1e999,x\n" % stamp,             # numeric, but not finite
        "\n",
        "%s 10:01:00,A,T1,21.0,x\r\n" % stamp,            # CRLF is fine
        "%s 10:00:50,A,T1,20.75,x\n" % stamp,             # out of order: sorted
    ]))
    (data / "sum20260520-lone.txt").write_text("%s 12:00,B,P1,7\n" % stamp)
    # Names that do not match the allowed pattern are never listed or read.
    for name in ("20260520-<i>x.txt", "sum20260520-a b.txt", "sum20260520-x.txt.bak",
                 ".sum20260520-hidden.txt", "sum2026052-short.txt"):
        (data / name).write_text("%s 10:00,Z,Z,%s\n" % (stamp, 1))
    outside = root / "outside"
    outside.mkdir()
    (outside / "sum20260520-secret.txt").write_text("%s 10:00,%s,X,1\n" % (stamp, SECRET))
    (root / "sum20260520-secret.txt").write_text("%s 10:00,%s,X,1\n" % (stamp, SECRET))
    # Only our ini: every error level reported to the server log, and none of
    # Debian's optional extensions (ctype, iconv, mbstring...) loaded.
    ini = root / "ini"
    ini.mkdir()
    (ini / "kei-test.ini").write_text("error_reporting=E_ALL\nlog_errors=On\ndisplay_errors=Off\n")
    server = PhpServer(REPO / "php", env={"KEI_DATA_DIR": str(data), "TZ": "Asia/Tokyo",
                                          "PHP_INI_SCAN_DIR": str(ini)})
    server.start()
    yield {"url": server.url(""), "data": data, "truth": truth, "server": server}
    server.close()


def fetch(site, **params) -> requests.Response:
    return requests.get(site["url"], params=params, timeout=10)


def attributes(html: str, tag: str, cls: str) -> List[Dict[str, str]]:
    """The attributes of each <tag class="cls ..."> in ``html``."""
    found = []
    for match in re.finditer(r"<%s ([^>]*)>" % tag, html):
        attrs = dict(re.findall(r'([a-z-]+)="([^"]*)"', match.group(1)))
        if cls in attrs.get("class", "").split():
            found.append(attrs)
    return found


def test_a_full_day_has_every_chart_with_all_points(site):
    response = fetch(site, date="20260520", base="home")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    html = response.text
    charts = [a["data-chart"] for a in attributes(html, "svg", "chart")]
    assert charts == ["energy", "power", "current", "other-0"]
    series = {(a["data-unit"], a["data-sensor"], a["data-kind"]): int(a["data-points"])
              for a in attributes(html, "path", "series")}
    assert series == {
        ("BR", "E7", "raw"): 8640, ("BR", "E7", "avg"): 144,
        ("BR", "E8R", "raw"): 2880, ("BR", "E8R", "avg"): 144,
        ("BR", "E8T", "raw"): 2880, ("BR", "E8T", "avg"): 144,
        ("A", "T1", "raw"): 1440, ("A", "T1", "avg"): 144,
    }
    assert "Unit A, sensor T1" in html
    assert "sum20260520-home.txt (960 lines)" in html


def test_half_hour_energy_from_the_meters_own_values_is_exact(site):
    html = fetch(site, date="20260520", base="home").text
    forward = float(re.search(r'data-day-total-forward="([0-9.]+)" data-slots="48"', html).group(1))
    reverse = float(re.search(r'data-day-total-reverse="([0-9.]+)" data-slots="48"', html).group(1))
    assert forward == pytest.approx(site["truth"]["forward"], abs=1e-4)
    assert reverse == pytest.approx(site["truth"]["reverse"], abs=1e-4)
    bars = attributes(html, "rect", "bar")
    assert len(bars) == 96
    assert {b["class"] for b in bars} == {"bar exact"}
    by_slot = {int(b["data-slot"]): float(b["data-kwh"]) for b in bars if b["data-direction"] == "forward"}
    assert sorted(by_slot) == list(range(48))
    assert sum(by_slot.values()) == pytest.approx(forward, abs=1e-3)
    # The 12:00-12:30 slot is pure export (solar), so nothing forward.
    assert by_slot[24] == 0


def test_half_hour_energy_estimated_from_e0_across_midnight(site):
    """No EA: E0 is interpolated at each boundary, using the neighbour days' files at midnight."""
    for raw in ("1", "0"):   # raw readings, or the 10-minute averages only
        html = fetch(site, date="20260520", base="e0only", raw=raw).text
        match = re.search(r'data-day-total-forward="([0-9.]+)" data-slots="(\d+)"', html)
        assert match.group(2) == "48"
        assert float(match.group(1)) == pytest.approx(site["truth"]["e0only"], abs=0.02)
        assert {b["class"] for b in attributes(html, "rect", "bar")} == {"bar estimated"}
        assert "reverse" not in html.lower().split("<main")[1].split("</svg>")[0]


def _path_vertices(d: str) -> List[Tuple[str, float, float]]:
    return [(cmd, float(x), float(y)) for cmd, x, y in re.findall(r"([ML])([-0-9.]+) ([-0-9.]+)", d)]


def test_downsampling_keeps_the_extremes_of_every_column(site):
    html = fetch(site, date="20260520", base="home").text
    power_svg = html.split('data-chart="power"')[1].split("</svg>")[0]
    # The y axis: value labels at known y positions give the linear mapping back.
    ticks = [(float(y), float(v)) for y, v in re.findall(
        r'<text x="\d+" y="([-0-9.]+)" class="ylabel">([-0-9.]+)</text>', power_svg)]
    (y0, v0), (y1, v1) = ticks[0], ticks[-1]
    to_value = lambda y: v0 + (y + 4 - y0) * (v1 - v0) / (y1 - y0)   # labels sit 4 below the line
    raw = [a for a in attributes(power_svg, "path", "series") if a["data-kind"] == "raw"][0]
    vertices = _path_vertices(raw["d"])
    assert len(vertices) == int(raw["data-vertices"])
    assert len(vertices) <= 4 * 864
    assert [v[1] for v in vertices] == sorted(v[1] for v in vertices)     # time goes forward
    readings, _ = meter_day(DAY)
    powers = [value for stamp, unit, sensor, value in readings if sensor == "E7"]
    values = [to_value(y) for _, _, y in vertices]
    pixel = (v1 - v0) / (y1 - y0) * 0.06       # half a rounding step of 0.1 px
    assert max(values) == pytest.approx(max(powers), abs=abs(pixel))
    assert min(values) == pytest.approx(min(powers), abs=abs(pixel))
    # Per 100-s column, the highest and lowest reading are both drawn.
    for column in (0, 300, 863):
        in_column = [p for (stamp, unit, sensor, p) in readings if sensor == "E7"
                     and int((stamp - _at(DAY, 0)).total_seconds()) // 100 == column]
        drawn = [to_value(y) for _, x, y in vertices if column <= x - 60 < column + 1]
        assert max(drawn) == pytest.approx(max(in_column), abs=abs(pixel))
        assert min(drawn) == pytest.approx(min(in_column), abs=abs(pixel))


def test_averages_only_when_asked(site):
    html = fetch(site, date="20260520", base="home", raw="0").text
    kinds = {a["data-kind"] for a in attributes(html, "path", "series")}
    assert kinds == {"avg"}
    assert "20260520-home.txt" not in html.replace("sum20260520-home.txt", "")


def test_hostile_ids_in_a_file_are_escaped(site):
    html = fetch(site, date="20260520", base="evil").text
    assert HOSTILE_UNIT not in html
    assert "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;&amp;amp;" in html
    path = attributes(html, "path", "series")[0]
    assert path["data-unit"] == "&lt;script&gt;alert(1)&lt;/script&gt;"


def test_only_well_named_files_are_listed(site):
    html = fetch(site, date="20260520").text
    bases = re.findall(r'<option value="([^"]*)"', html)
    assert bases == ["e0only", "evil", "home", "lone", "messy"]
    for text in ("&lt;i&gt;", "a b", ".bak", "hidden", "short", SECRET):
        assert text not in html


@pytest.mark.parametrize("params", [
    {"base": "../outside/x"}, {"base": "..%2Foutside"}, {"base": "../sum20260520-secret"},
    {"base": "home/../home"}, {"base": "home\x00"}, {"base": "home.txt"}, {"base": ""},
    {"base": "secret/"}, {"base[]": "home"}, {"base": "x" * 200},
    {"date": "../../outside"}, {"date": "20260230"}, {"date": "2026-13-01"}, {"date": "2026052"},
    {"date": "20260520x"}, {"date": "2026-0520"}, {"date": "today"}, {"date[]": "20260520"},
    {"date": " 20260520"}, {"date": "20260520\n"},
])
def test_bad_parameters_are_rejected_and_read_nothing(site, params):
    if "date[]" not in params:
        params.setdefault("date", "20260520")
    response = fetch(site, **params)
    assert response.status_code == 400
    assert SECRET not in response.text
    assert 'class="chart"' not in response.text
    assert 'class="problem"' in response.text


def test_a_day_without_files(site):
    response = fetch(site, date="2026-05-22", base="home")
    assert response.status_code == 200
    assert 'id="no-data"' in response.text
    assert 'class="chart"' not in response.text
    assert 'href="?date=20260521&amp;base=home"' in response.text     # previous day
    assert 'href="?date=20260523&amp;base=home"' in response.text


def test_a_base_that_does_not_exist_is_an_empty_day(site):
    response = fetch(site, date="20260520", base="nobody")
    assert response.status_code == 200 and 'id="no-data"' in response.text


def test_default_day_is_today_and_default_base_has_data(site):
    # The server runs with TZ=Asia/Tokyo: UTC+9 all year (no tzdata needed here).
    today = datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=9))).date()
    html = fetch(site).text
    shown = re.search(r"<strong>(\d{4}-\d\d-\d\d)</strong>", html).group(1)
    assert shown == today.isoformat()
    # 20260519 has files of "e0only" only (the previous day's tail).
    html = fetch(site, date="20260519").text
    assert html.count("selected") == 1 and '<option value="e0only" selected>' in html


def test_bad_lines_are_counted_and_skipped(site):
    html = fetch(site, date="20260520", base="messy").text
    assert "20260520-messy.txt (9 lines, 6 skipped)" in html
    series = attributes(html, "path", "series")
    assert [(s["data-sensor"], s["data-points"]) for s in series] == [("T1", "3")]
    times = [x for _, x, _ in _path_vertices(series[0]["d"])]
    assert times == sorted(times)


def test_a_lone_reading_is_drawn_as_a_dot(site):
    html = fetch(site, date="20260520", base="lone").text
    (series,) = attributes(html, "path", "series")
    assert (series["data-points"], series["data-vertices"]) == ("1", "1")
    assert re.fullmatch(r"M[0-9.]+ [0-9.]+h0", series["d"])      # zero-length, round cap


def test_nothing_refers_outside_the_page(site):
    html = fetch(site, date="20260520", base="home").text
    references = re.findall(r'\b(?:href|src|action)="([^"]*)"', html)
    assert references
    for reference in references:
        assert reference == "" or reference.startswith("?") or reference.startswith("data:"), reference
    assert "@import" not in html and "url(" not in html


def test_an_unreadable_data_directory_is_reported(tmp_path):
    with PhpServer(REPO / "php", env={"KEI_DATA_DIR": str(tmp_path / "missing")}) as server:
        response = requests.get(server.url(""), params={"date": "20260520"}, timeout=10)
    assert response.status_code == 200
    assert "The data directory cannot be read" in response.text
    assert str(tmp_path) not in response.text


# -- in a real browser


@pytest.fixture(scope="module")
def browser():
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    with Browser(width=1100, height=900) as chromium:
        yield chromium


CHART_SUMMARY = """
return Array.from(document.querySelectorAll('svg.chart')).map(function (svg) {
  var box = svg.getBoundingClientRect();
  return {
    id: svg.dataset.chart, width: box.width, height: box.height,
    bars: svg.querySelectorAll('rect.bar').length,
    series: Array.from(svg.querySelectorAll('path.series')).map(function (path) {
      return {unit: path.dataset.unit, sensor: path.dataset.sensor, kind: path.dataset.kind,
              points: +path.dataset.points, vertices: +path.dataset.vertices,
              commands: (path.getAttribute('d').match(/[ML]/g) || []).length,
              length: path.getTotalLength()};
    })
  };
});
"""


def test_the_page_in_headless_chromium(site, browser, tmp_path):
    browser.clear_logs()
    url = site["url"] + "?date=20260520&base=home"
    browser.get(url)
    assert browser.execute("return document.readyState") == "complete"
    charts = browser.execute(CHART_SUMMARY)
    assert [c["id"] for c in charts] == ["energy", "power", "current", "other-0"]
    for chart in charts:
        assert chart["width"] > 800 and chart["height"] > 200, chart["id"]
    assert charts[0]["bars"] == 96
    series = {c["id"]: [(s["sensor"], s["kind"], s["points"]) for s in c["series"]] for c in charts}
    assert series == {
        "energy": [],
        "power": [("E7", "raw", 8640), ("E7", "avg", 144)],
        "current": [("E8R", "raw", 2880), ("E8R", "avg", 144), ("E8T", "raw", 2880), ("E8T", "avg", 144)],
        "other-0": [("T1", "raw", 1440), ("T1", "avg", 144)],
    }
    for chart in charts:
        for one in chart["series"]:
            assert one["commands"] == one["vertices"] > 0
            assert one["length"] > 500          # really drawn across the plot
    errors = browser.console_errors()
    assert errors == []
    requested = browser.requested_urls()
    assert url in requested
    leaving = [u for u in requested if not (u.startswith(site["url"]) or u.startswith("data:"))]
    assert leaving == []
    artifacts = Path(os.environ.get("KEI_TEST_ARTIFACTS") or tmp_path)
    shot = browser.screenshot(artifacts / "graph-page.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20000


def test_hostile_ids_stay_text_in_the_browser(site, browser):
    browser.clear_logs()
    browser.get(site["url"] + "?date=20260520&base=evil")
    found = browser.execute(
        "return {imgs: document.images.length, scripts: document.scripts.length,"
        " ours: document.scripts[0].textContent.indexOf('Progressive enhancement') > 0,"
        " title: document.querySelector('h2').textContent,"
        " unit: document.querySelector('path.series').dataset.unit}")
    assert found == {"imgs": 0, "scripts": 1, "ours": True,
                     "title": "Unit %s, sensor %s" % (HOSTILE_UNIT, HOSTILE_SENSOR),
                     "unit": HOSTILE_UNIT}
    assert browser.console_errors() == []


def test_the_browser_helper_sees_errors_and_outside_requests(browser):
    """The checks above could not fail if the helper saw nothing: show that it sees."""
    browser.clear_logs()
    browser.get("data:text/html,<img src='http://127.0.0.2:9/x.png'>"
                "<script>console.error('kei-probe')</script>")
    assert any("kei-probe" in message for message in browser.console_errors())
    assert "http://127.0.0.2:9/x.png" in browser.requested_urls()


def test_no_php_error_warning_or_notice_was_logged(site):
    """Runs last: every request above went through this server (E_ALL)."""
    fetch(site, date="20260520", base="home")
    log = site["server"].log()
    assert "GET /?date=20260520&base=home" in log
    assert not re.search(r"PHP (Fatal|Parse|Warning|Notice|Deprecated|Strict)", log), log[-3000:]
