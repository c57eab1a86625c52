"""The line-protocol codec: layout, escaping, float fields, time zones; and a
round trip through real VictoriaMetrics and InfluxDB (escaping as servers read it)."""

from __future__ import annotations

import datetime
import json
import subprocess

import pytest
import requests

from keilib import lineprotocol
from keilib.average import Aggregate
from keilib.record import Record
from servers import influxdb, victoria  # noqa: F401 (fixtures)
from support import PYTHON, subprocess_env

T = datetime.datetime(2026, 5, 20, 14, 0, 0)


FakeAggregate = Aggregate      # the averaging stage's own type


def test_reading_line_layout_value_is_always_a_float():
    precision, line = lineprotocol.encode(Record(T, "BR", "E7", 1852), "home")
    stamp = int(T.timestamp())
    assert precision == "s"
    assert line == "kei,sensor=E7,site=home,unit=BR value=1852.0 %d\n" % stamp
    assert lineprotocol.encode(Record(T, "BR", "E0", 12345.6), "home")[1].split(" ")[1] == "value=12345.6"
    assert lineprotocol.encode(Record(T, "BR", "E7", 1e-7), "home")[1].split(" ")[1] == "value=1e-07"


def test_aggregate_line_layout():
    aggregate = FakeAggregate(T, "BR", "E7", 1852.5, "avg", count=60, minimum=310, maximum=2400, window=600)
    precision, line = lineprotocol.encode(aggregate, "home")
    assert precision == "s"
    assert line == ("kei_10min,sensor=E7,site=home,unit=BR count=60i,max=2400.0,mean=1852.5,min=310.0 %d\n"
                    % int(T.timestamp()))
    hourly = Aggregate(T, "BR", "E7", 1852.5, "avg", count=60, minimum=310, maximum=2400, window=3600)
    assert lineprotocol.encode(hourly, "h")[1].startswith("kei_60min,")


def test_sub_second_records_are_written_in_milliseconds():
    stamp = T.replace(microsecond=123999)
    precision, line = lineprotocol.encode(Record(stamp, "1", "t", 21.5), "home")
    assert precision == "ms"
    assert line.endswith(" %d\n" % (int(T.timestamp()) * 1000 + 123))


def test_escaping_of_site_tag():
    line = lineprotocol.encode(Record(T, "BR", "E7", 1), "my home, 2F=a")[1]
    assert r"site=my\ home\,\ 2F\=a," in line
    assert lineprotocol.escape_measurement("a b,c=d") == r"a\ b\,c=d"


@pytest.mark.parametrize("bad", ["", "a\nb", "tab\there", " padded", "back\\slash", 5, None])
def test_bad_site_is_refused(bad):
    with pytest.raises(ValueError):
        lineprotocol.check_site(bad)


def _epochs_in_zone(zone, stamps):
    """Encode ``stamps`` in a child Python running with TZ=zone; the epochs it wrote."""
    code = ("import datetime, json, sys\n"
            "from keilib import lineprotocol\nfrom keilib.record import Record\n"
            "out = []\n"
            "for text in json.loads(sys.argv[1]):\n"
            "    t = datetime.datetime.fromisoformat(text)\n"
            "    out.append(lineprotocol.encode(Record(t, 'BR', 'E7', 1), 's')[1].split()[-1])\n"
            "print(json.dumps(out))\n")
    done = subprocess.run([PYTHON, "-c", code, json.dumps(stamps)], env=subprocess_env(TZ=zone),
                          capture_output=True, text=True, timeout=30, check=True)
    return [int(x) for x in json.loads(done.stdout)]


def _utc(*args):
    return int(datetime.datetime(*args, tzinfo=datetime.timezone.utc).timestamp())


def test_local_time_to_utc_in_tokyo():
    # JST is UTC+9 all year (no DST).
    got = _epochs_in_zone("Asia/Tokyo", ["2026-05-20T14:00:00", "2026-01-01T00:00:00",
                                         "2026-12-31T23:59:59"])
    assert got == [_utc(2026, 5, 20, 5, 0, 0), _utc(2025, 12, 31, 15, 0, 0), _utc(2026, 12, 31, 14, 59, 59)]


def test_local_time_to_utc_across_dst_in_berlin():
    # CET (UTC+1) in winter, CEST (UTC+2) in summer; 2026-03-29 02:00 -> 03:00.
    got = _epochs_in_zone("Europe/Berlin", ["2026-01-15T12:00:00", "2026-07-01T12:00:00",
                                            "2026-03-29T01:59:59", "2026-03-29T03:00:00"])
    assert got == [_utc(2026, 1, 15, 11, 0, 0), _utc(2026, 7, 1, 10, 0, 0),
                   _utc(2026, 3, 29, 0, 59, 59), _utc(2026, 3, 29, 1, 0, 0)]


def test_escaped_lines_read_back_from_victoriametrics(victoria):  # noqa: F811
    site = "my home, 2F=x"
    lines = [lineprotocol.encode(Record(T, "BR", "E7", 1852), site),
             lineprotocol.encode(Record(T.replace(microsecond=250000), "1", "t", 21.5), site)]
    for precision, line in lines:
        answer = requests.post(victoria.url + "/write", params={"db": "kei", "precision": precision},
                               data=line.encode(), timeout=10)
        assert answer.status_code == 204, answer.text
    series = {(s["metric"]["unit"], s["metric"]["sensor"]): s for s in victoria.export('{__name__="kei_value"}')}
    assert series[("BR", "E7")]["metric"]["site"] == site
    assert series[("BR", "E7")]["timestamps"] == [int(T.timestamp()) * 1000]
    assert series[("1", "t")]["timestamps"] == [int(T.timestamp()) * 1000 + 250]
    assert series[("1", "t")]["values"] == [21.5]


def test_escaped_lines_read_back_from_influxdb(influxdb):  # noqa: F811
    influxdb.create_database("kei")
    site = "my home, 2F=x"
    aggregate = FakeAggregate(T, "BR", "E7", 1852.5, "avg", count=60, minimum=310, maximum=2400)
    text = "".join(lineprotocol.encode(r, site)[1] for r in [Record(T, "BR", "E7", 1852), aggregate])
    answer = requests.post(influxdb.url + "/write", params={"db": "kei", "precision": "s"},
                           data=text.encode(), timeout=10)
    assert answer.status_code == 204, answer.text
    [series] = influxdb.query("SELECT value, site FROM kei", db="kei")
    assert series["values"] == [[int(T.timestamp()) * 1000, 1852.0, site]]
    [series] = influxdb.query("SELECT mean, min, max, count FROM kei_10min", db="kei")
    assert series["values"] == [[int(T.timestamp()) * 1000, 1852.5, 310.0, 2400.0, 60]]
    # An integer would conflict with the float field: the codec never writes one.
    answer = requests.post(influxdb.url + "/write", params={"db": "kei", "precision": "s"},
                           data=b"kei,sensor=E7,site=x,unit=BR value=5i %d\n" % int(T.timestamp()), timeout=10)
    assert answer.status_code == 400 and "conflict" in answer.text


def test_any_site_name_survives_the_round_trip_through_both_servers(tmp_path):
    """Random site names (quotes, '=', ',', spaces, non-ASCII) come back from
    the servers exactly as written (a backslash is refused by check_site: the
    servers disagree on it, as this test found)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from servers import InfluxDB, VictoriaMetrics
    names = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=20) \
        .map(str.strip).filter(bool).filter(lambda name: "\\" not in name)
    vm = VictoriaMetrics(tmp_path / "vm")
    influx = InfluxDB(tmp_path / "influx")
    try:
        vm.start()
        influx.start()
        influx.create_database("kei")
        seen = []

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        @given(site=names)
        def check(site):
            number = len(seen)
            seen.append(site)
            precision, line = lineprotocol.encode(Record(T, "u%d" % number, "s", 1.5), site)
            for url in (vm.url, influx.url):
                answer = requests.post(url + "/write", params={"db": "kei", "precision": precision},
                                       data=line.encode(), timeout=10)
                assert answer.status_code == 204, (site, answer.text)
            [series] = vm.export('{__name__="kei_value",unit="u%d"}' % number)
            assert series["metric"]["site"] == site
            [row] = influx.query("SELECT value, site FROM kei WHERE unit = 'u%d'" % number, db="kei")[0]["values"]
            assert row[2] == site
        check()
    finally:
        vm.stop()
        influx.stop()
