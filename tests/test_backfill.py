"""Back-fill: after a gap, the B-route reader reads the missed half hours from the
meter's history into the SQLite store (real reader, simulated module and meter
over sim://, real SqlRecorder into a temporary file)."""

from __future__ import annotations

import datetime
import itertools
import json
import logging
import queue
import sqlite3
from pathlib import Path
from typing import Any, List, Optional

import pytest

from keilib.backfill import HALF_HOUR, HistoryCheckpoint
from keilib.broute import BrouteReader
from keilib.clock import ScaledClock
from keilib.errors import ConfigError
from keilib.sim import protocol_sim, register_url_handler
from keilib.sim.meter import SmartMeter
from keilib.sim.wisun import WisunModule
from keilib.skstack import BP35C2
from keilib.sql import SqlRecorder, local_time
from support import wait_for

ROUTE_B_ID = "00112233445566778899AABBCCDDEEFF"
PASSWORD = "0123456789AB"
SCALE = 600.0          # a half hour is 3 s of real time
_names = itertools.count()


class JumpClock(ScaledClock):
    """A scaled clock that can also leap ahead (time passing while kei is stopped)."""

    def __init__(self, factor: float, start: datetime.datetime):
        super().__init__(factor, start)
        self.leapt = 0.0

    def _elapsed(self) -> float:
        return super()._elapsed() + self.leapt

    def leap(self, seconds: float) -> None:
        self.leapt += seconds


class Station:
    """A simulated meter + module, and kei's reader -> record_que -> SqlRecorder."""

    def __init__(self, tmp: Path, start: datetime.datetime, our_offset: float = 0.0, **meter_options: Any):
        register_url_handler()
        self.tmp = tmp
        self.meter_clock = JumpClock(SCALE, start)
        # kei's clock may differ from the meter's: back-fill must only use the meter's times
        self.our_clock = JumpClock(SCALE, start + datetime.timedelta(seconds=our_offset))
        self.meter = SmartMeter(seed=11, **meter_options)
        self.module = WisunModule(kind="bp35c2", latency="zero", clock=self.meter_clock, seed=11, meter=self.meter)
        self.name = "backfill-%d" % next(_names)
        protocol_sim.register(self.name, self.module)
        self.record_que: "queue.Queue[Any]" = queue.Queue(5000)
        self.database = tmp / "kei.sqlite"
        self.recorder = SqlRecorder(self.record_que, database=str(self.database), clock=self.our_clock)
        self.recorder.start()
        self.reader: Optional[BrouteReader] = None

    def start_reader(self, requests: Any = None, **options: Any) -> BrouteReader:
        self.reader = BrouteReader(BP35C2("sim://wisun?name=%s" % self.name, 115200), ROUTE_B_ID, PASSWORD,
                                   requests=requests or [{"epc": ["E7"], "cycle": 300}], record_que=self.record_que,
                                   scan_cache=str(self.tmp / "scancache.json"), response_timeout=60.0,
                                   history_checkpoint=str(self.tmp / "history.json"), clock=self.our_clock,
                                   **options)
        self.reader.start()
        return self.reader

    def stop_reader(self) -> None:
        assert self.reader is not None and self.reader.stop(5)

    def leap(self, seconds: float) -> None:
        """Both clocks move on; the meter's notifications for the leap are not heard by anyone."""
        self.meter_clock.leap(seconds)
        self.our_clock.leap(seconds)
        self.meter.notifications_due(self.meter_clock.now())

    def stop(self) -> None:
        if self.reader is not None:
            self.reader.stop(5)
        self.recorder.stop(5)
        self.module.close()
        protocol_sim.forget(self.name)

    def series(self, sensor: str = "EA") -> List[tuple]:
        try:
            with sqlite3.connect(str(self.database), timeout=5) as db:
                return db.execute("SELECT r.ts, r.value, r.data_id FROM reading r JOIN sensor s ON s.id = "
                                  "r.sensor_id WHERE s.sensor = ? ORDER BY r.ts", (sensor,)).fetchall()
        except sqlite3.OperationalError:
            return []

    def checkpoint(self) -> dict:
        try:
            return json.loads((self.tmp / "history.json").read_text())
        except (OSError, ValueError):
            return {}


@pytest.fixture
def stations(tmp_path):
    made: List[Station] = []

    def make(**options: Any) -> Station:
        station = Station(tmp_path, **options)
        made.append(station)
        return station

    yield make
    for station in made:
        station.stop()


def held_stamp(station: Station) -> Optional[datetime.datetime]:
    held = station.checkpoint().get("held")
    return datetime.datetime.fromisoformat(held) if held else None


def run_gap(station: Station, gap_seconds: float, timeout: float = 30.0, **reader_options: Any) -> datetime.datetime:
    """kei runs, is stopped for ``gap_seconds`` of simulated time, runs again until nothing is missing."""
    station.start_reader(**reader_options)
    first = wait_for(lambda: held_stamp(station), timeout=15, message="a first EA")
    station.stop_reader()
    station.leap(gap_seconds)
    station.start_reader(**reader_options)
    wait_for(lambda: (held_stamp(station) or first) > first + datetime.timedelta(seconds=gap_seconds - 1800)
             and station.checkpoint().get("gaps") == [], timeout=timeout, message="the gap back-filled")
    last = held_stamp(station)
    station.stop_reader()
    station.recorder.stop(5)
    return first, last


def check_series(station: Station, first: datetime.datetime, last: datetime.datetime) -> None:
    """Every half hour from first to last is stored once, equal to the meter's; the
    energy of each half hour equals the meter model's integral (to its 0.1 kWh count)."""
    rows = [(local_time(ts), value, data_id) for ts, value, data_id in station.series("EA")]
    rows = [row for row in rows if first <= row[0] <= last]
    expected = [first + index * HALF_HOUR for index in range(int((last - first) / HALF_HOUR) + 1)]
    assert [row[0] for row in rows] == expected           # the key makes each one once
    for stamp, value, _ in rows:
        assert value == round(station.meter.fixed_time(stamp)[1] * 0.1, 4), stamp
    assert any(data_id == "hist" for _, _, data_id in rows)
    wrap = 10 ** station.meter.digits
    for (early, low, _), (late, high, _) in zip(rows, rows[1:]):
        derived = ((round(high * 10) - round(low * 10)) % wrap) / 10
        model = (station.meter.energy_ws(late)[0] - station.meter.energy_ws(early)[0]) / 3.6e6
        assert abs(derived - model) < 0.1, (early, derived, model)
    total = ((round(rows[-1][1] * 10) - round(rows[0][1] * 10)) % wrap) / 10
    model_total = (station.meter.energy_ws(last)[0] - station.meter.energy_ws(first)[0]) / 3.6e6
    assert abs(total - model_total) < 0.1


def test_six_hours_stopped_are_read_back_with_ec(stations, caplog):
    caplog.set_level(logging.INFO, logger="keilib")
    # kei's clock 67 minutes ahead of the meter's: only the meter's times count
    station = stations(start=datetime.datetime(2026, 11, 24, 9, 10), our_offset=67 * 60)
    first, last = run_gap(station, 6 * 3600)
    check_series(station, first, last)
    hist = [row for row in station.series("EA") if row[2] == "hist"]
    assert len(hist) >= 11
    assert "the meter has EC/ED" in caplog.text


def test_three_days_stopped_are_read_back(stations):
    station = stations(start=datetime.datetime(2026, 11, 20, 15, 40), reverse=True)
    first, last = run_gap(station, 3 * 86400)
    check_series(station, first, last)
    assert len([row for row in station.series("EA") if row[2] == "hist"]) >= 3 * 48 - 1
    # export comes with it, from EC's second value
    assert len([row for row in station.series("EB") if row[2] == "hist"]) >= 3 * 48 - 1


def test_a_meter_without_ec_is_read_back_day_by_day_across_midnight(stations, caplog):
    caplog.set_level(logging.INFO, logger="keilib")
    station = stations(start=datetime.datetime(2026, 11, 24, 20, 10), history2=False, reverse=True)
    first, last = run_gap(station, 6 * 3600)
    assert first.date() != last.date()
    check_series(station, first, last)
    assert "no EC/ED; back-fill reads E5 + E2/E4" in caplog.text
    sets = [s for s in station.meter.served if s.epc == 0xE2]
    assert {s.value.day for s in sets} == {0, 1}
    assert [row for row in station.series("EB") if row[2] == "hist"]


def test_stick_unplugged_for_two_hours_while_running(stations, caplog):
    caplog.set_level(logging.INFO, logger="keilib")
    station = stations(start=datetime.datetime(2026, 11, 24, 13, 5))
    station.start_reader()
    first = wait_for(lambda: held_stamp(station), timeout=15, message="a first EA")
    protocol_sim.unplug(station.name)
    wait_for(lambda: "-> INIT" in caplog.text, timeout=10)
    station.leap(2 * 3600)
    protocol_sim.replug(station.name)
    wait_for(lambda: (held_stamp(station) or first) >= first + datetime.timedelta(hours=2)
             and station.checkpoint().get("gaps") == [], timeout=30, message="the gap back-filled")
    last = held_stamp(station)
    station.stop_reader()
    station.recorder.stop(5)
    check_series(station, first, last)


def test_checkpoint_gaps_split_trim_and_survive_a_restart(tmp_path):
    path = str(tmp_path / "history.json")
    day = datetime.datetime(2026, 11, 24)
    checkpoint = HistoryCheckpoint(path, days=1)
    assert checkpoint.seen(day) is None                     # the first ever: no gap
    assert checkpoint.seen(day + HALF_HOUR) is None         # contiguous
    assert checkpoint.seen(day + 4 * HALF_HOUR) == (day + 3 * HALF_HOUR, day + 2 * HALF_HOUR)
    checkpoint.seen(day + 10 * HALF_HOUR)
    assert checkpoint.gaps == [(day + 9 * HALF_HOUR, day + 5 * HALF_HOUR), (day + 3 * HALF_HOUR, day + 2 * HALF_HOUR)]
    checkpoint.take((day + 7 * HALF_HOUR, day + 6 * HALF_HOUR))     # answered from the middle
    again = HistoryCheckpoint(path, days=1)
    again.load()
    assert again.held == day + 10 * HALF_HOUR
    assert again.gaps == [(day + 9 * HALF_HOUR, day + 8 * HALF_HOUR), (day + 5 * HALF_HOUR, day + 5 * HALF_HOUR),
                          (day + 3 * HALF_HOUR, day + 2 * HALF_HOUR)]
    again.seen(day + 2 * 48 * HALF_HOUR)      # two days later: only one day is asked for
    assert again.gaps == [(day + 95 * HALF_HOUR, day + 48 * HALF_HOUR)]


def test_backfill_days_is_checked():
    with pytest.raises(ConfigError, match="backfill_days"):
        BrouteReader(BP35C2("sim://wisun", 115200), ROUTE_B_ID, PASSWORD, backfill_days=100)


def test_the_session_dropping_mid_backfill_stops_it_and_a_rejoin_finishes_it(stations, caplog):
    caplog.set_level(logging.DEBUG, logger="keilib")
    station = stations(start=datetime.datetime(2026, 11, 24, 9, 10), history2=False)
    station.start_reader()
    first = wait_for(lambda: held_stamp(station), timeout=15, message="a first EA")
    station.stop_reader()
    station.leap(3 * 86400)
    station.module.delay_next_reply(20.0, 200)        # a slow meter: the back-fill takes a while
    reader = station.start_reader()
    wait_for(lambda: reader.health.snapshot()["counters"].get("history_frames", 0) >= 4, timeout=20)
    station.module.terminate_session()                 # EVENT 26 in the middle of it
    wait_for(lambda: station.checkpoint().get("gaps") == [] and held_stamp(station) > first
             + datetime.timedelta(days=2), timeout=40, message="the gap back-filled after the rejoin")
    last = held_stamp(station)
    station.stop_reader()
    station.recorder.stop(5)
    check_series(station, first, last)
    # Nothing was sent to the meter between the drop and the next session.
    messages = [record.getMessage() for record in caplog.records]
    dropped = next(i for i, m in enumerate(messages) if "the meter ended the session (EVENT 26)" in m)
    back = next(i for i, m in enumerate(messages) if i > dropped and "-> POLL" in m)
    assert not [m for m in messages[dropped:back] if m.startswith(">> SKSENDTO")]
    # ... and the back-fill went on in the new session.
    assert [m for m in messages[back:] if m.startswith("B-route history:") and "half hours read" in m]


def _answer_reader(tmp_path, gap_day: datetime.date) -> BrouteReader:
    """A reader (not started) with D3 = 10 and E1 = 0.1 kWh known, a checkpoint
    held at 06:00 of the day after ``gap_day``, and the whole of ``gap_day`` missing."""
    reader = BrouteReader(BP35C2("sim://wisun?name=unused", 115200), ROUTE_B_ID, PASSWORD,
                          record_que=queue.Queue(), scan_cache=str(tmp_path / "scan.json"))
    reader.coefficient, reader.unit_code, reader.digits = 10, 0x01, 6
    midnight = datetime.datetime.combine(gap_day, datetime.time())
    reader.history.held = midnight + datetime.timedelta(days=1, hours=6)
    reader.history.gaps = [(midnight + datetime.timedelta(days=1), midnight)]
    reader.history_get_map = (0xE2, 0xE5)
    return reader


def _answer(reader: BrouteReader, prop_epc: int, edt: bytes, **pending: Any) -> List[Any]:
    from keilib import echonet
    reader.history_pending = dict(pending, tid=0x55, label="get", sent_at=0.0, epc=pending.get("epc", prop_epc))
    frame = echonet.Frame(0x55, echonet.METER, echonet.CONTROLLER, echonet.ESV.GET_RES,
                          (echonet.Property(prop_epc, edt),))
    assert reader.history_answer(frame, datetime.datetime(2026, 1, 1))
    records = []
    while not reader.record_que.empty():
        records.append(reader.record_que.get())
    return records


def test_daily_history_answers(tmp_path, caplog):
    from keilib import echonet
    caplog.set_level(logging.INFO, logger="keilib")
    day = datetime.date(2026, 11, 23)
    reader = _answer_reader(tmp_path, day)
    # E5 never set (day 0x00FF, all "no data"): nothing recorded, the gap stays
    assert _answer(reader, 0xE2, echonet.encode_daily_history(0xFF, [echonet.NO_DATA] * 48),
                   day=1, date=day) == []
    assert "E2 carries no day" in caplog.text and reader.history.missing == 49
    # Day 1 asked, day 2 reported: that day's values are not the gap's; nothing recorded
    values = [100 + slot for slot in range(48)]
    assert _answer(reader, 0xE2, echonet.encode_daily_history(2, values), day=1, date=day) == []
    assert "asked for day 1, the meter reports day 2" in caplog.text
    # The right day, with two "no data" slots: 46 records, scaled by D3 x E1, at the
    # meter's half-hour times from 00:00; the whole day is done (the next day's 00:00
    # is slot 0 of the next day's E2: still missing)
    values[5] = values[6] = echonet.NO_DATA
    records = _answer(reader, 0xE2, echonet.encode_daily_history(1, values), day=1, date=day)
    midnight = datetime.datetime.combine(day, datetime.time())
    assert [(r.timestamp, r.sensor, r.value, r.data_id) for r in records][:2] == [
        (midnight, "EA", 100.0, "hist"), (midnight + HALF_HOUR, "EA", 101.0, "hist")]
    assert len(records) == 46 and midnight + 5 * HALF_HOUR not in [r.timestamp for r in records]
    assert "no data for 2 half hours" in caplog.text
    assert reader.history.gaps == [(midnight + datetime.timedelta(days=1),) * 2]


def test_ec_answer_newest_first_across_midnight(tmp_path):
    from keilib import echonet
    day = datetime.date(2026, 11, 23)
    reader = _answer_reader(tmp_path, day)
    newest = datetime.datetime.combine(day, datetime.time()) + datetime.timedelta(days=1)   # the 00:00 slot
    pairs = [(2 - index, echonet.NO_DATA) for index in range(3)] + [(999_999, echonet.NO_DATA)]
    records = _answer(reader, 0xEC, echonet.encode_energy_history(newest, pairs), epc=0xEC)
    # D3 10 x E1 0.1 kWh = 1 kWh per count; values as the meter counts them, across its
    # 10^6 wrap (kei query --wrap counts across it)
    assert [(r.timestamp, r.value) for r in records] == [
        (newest, 2.0), (newest - HALF_HOUR, 1.0), (newest - 2 * HALF_HOUR, 0.0), (newest - 3 * HALF_HOUR, 999999.0)]
    assert reader.history.gaps == [(newest - 4 * HALF_HOUR, newest - datetime.timedelta(days=1))]


def test_one_minute_energy_d0_is_recorded_at_the_meters_minute(stations):
    station = stations(start=datetime.datetime(2026, 11, 24, 9, 10), one_minute=True, reverse=True)
    station.start_reader(requests=[{"epc": ["D0"], "cycle": 60}])
    wait_for(lambda: len(station.series("D0")) >= 3 and station.series("D0R"), timeout=20)
    station.stop_reader()
    station.recorder.stop(5)
    for ts, value, data_id in station.series("D0"):
        minute = local_time(ts)
        assert minute.second == 0 and data_id == "x"
        assert value == round(station.meter.energy_raw(minute) * 0.1, 4)
    for ts, value, _ in station.series("D0R"):
        assert value == round(station.meter.reverse_energy_raw(local_time(ts)) * 0.1, 4)


def test_only_backfill_days_are_asked_for(stations, caplog):
    caplog.set_level(logging.INFO, logger="keilib")
    station = stations(start=datetime.datetime(2026, 11, 24, 9, 10))
    station.start_reader(backfill_days=2)
    first = wait_for(lambda: held_stamp(station), timeout=15, message="a first EA")
    station.stop_reader()
    station.leap(10 * 86400)
    station.start_reader(backfill_days=2)
    wait_for(lambda: (held_stamp(station) or first) > first + datetime.timedelta(days=9)
             and station.checkpoint().get("gaps") == [], timeout=30, message="the gap back-filled")
    last = held_stamp(station)
    station.stop_reader()
    station.recorder.stop(5)
    hist = sorted(local_time(ts) for ts, _, data_id in station.series("EA") if data_id == "hist")
    assert hist[0] == last - datetime.timedelta(days=2) and len(hist) == 2 * 48
    check_series(station, hist[0], last)
    assert "older than 2 days are not asked for" in caplog.text


def test_one_minute_polls_d0_only_when_the_property_map_lists_it(stations, caplog):
    caplog.set_level(logging.INFO, logger="keilib")
    station = stations(start=datetime.datetime(2026, 11, 24, 9, 10), one_minute=True)
    station.start_reader(one_minute=True)          # first start: no checkpoint needed
    wait_for(lambda: len(station.series("D0")) >= 2, timeout=20)
    assert "polling it every 60 s" in caplog.text
    station.stop_reader()


def test_one_minute_without_d0_in_the_map_sends_no_d0(stations, caplog):
    caplog.set_level(logging.INFO, logger="keilib")
    station = stations(start=datetime.datetime(2026, 11, 24, 9, 10))
    station.start_reader(one_minute=True)
    wait_for(lambda: "the meter has no one-minute energy (D0); not polled" in caplog.text, timeout=20)
    wait_for(lambda: station.series("E7"), timeout=20)      # polling goes on
    station.stop_reader()
    assert not [r for r in caplog.records if "D0" in r.getMessage() and "Get_SNA" in r.getMessage()]
