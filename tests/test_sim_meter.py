"""keilib.sim.meter.SmartMeter: answers as a Release-F meter, deterministic load, exact energy."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keilib import echonet as el
from keilib.echonet import CONTROLLER, ESV, METER, NO_DATA, NODE_PROFILE, Frame, Property
from keilib.sim.meter import MAX_NOTIFICATION_BACKLOG, STEP_SECONDS, SmartMeter

T2300 = datetime.datetime(2018, 7, 29, 23, 0)
T2310 = datetime.datetime(2018, 7, 29, 23, 10)
MINUTE = datetime.timedelta(minutes=1)
HALF_HOUR = datetime.timedelta(minutes=30)


def hx(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", "").replace("|", ""))


def ask(meter: SmartMeter, frame: Frame, now: datetime.datetime) -> Frame:
    """Send one request, expect exactly one answer, return it decoded."""
    replies = meter.handle(frame.encode(), now)
    assert len(replies) == 1, replies
    return Frame.decode(replies[0])


def get(meter: SmartMeter, now: datetime.datetime, *epcs: int, tid: int = 1) -> Frame:
    return ask(meter, el.get_request(tid, epcs), now)


def seed002_meter(**extra) -> SmartMeter:
    """The meter of seeds/002: E0 1314.0 kWh, E3 2.1 kWh at 2018-07-29 23:00 (0.1 kWh, 6 digits)."""
    return SmartMeter(seed=2, reverse=True, start=T2300, start_kwh=1314.0, start_reverse_kwh=2.1,
                      **extra)


# ---------------------------------------------------------------- the seed-002 table and section 5


def test_replays_the_seed_002_table():
    meter = seed002_meter(overrides={0xE7: hx("0000073C"), 0xE8: hx("0046006E"),
                                     0xE0: hx("00003354"), 0xE3: hx("00000015")})
    now = T2300 + 3 * MINUTE
    expected = [(0x80, "30"), (0xD3, "00000001"), (0xD7, "06"), (0xE0, "00003354"), (0xE1, "01"),
                (0xE2, "00FF" + "FFFFFFFE" * 48), (0xE3, "00000015"), (0xE4, "00FF" + "FFFFFFFE" * 48),
                (0xE5, "FF"), (0xE7, "0000073C"), (0xE8, "0046006E"),
                (0xEA, "07E2071D17000000003354"), (0xEB, "07E2071D17000000000015"),
                (0xEC, "FFFFFFFFFFFF01FFFFFFFEFFFFFFFE"), (0xED, "FFFFFFFFFFFF01")]
    for epc, edt in expected:   # one at a time, as the seed's script did
        reply = get(meter, now, epc, tid=epc)
        assert reply.esv == ESV.GET_RES and reply.tid == epc
        assert (reply.seoj, reply.deoj) == (METER, CONTROLLER)
        assert reply.properties == (Property(epc, hx(edt)),), hex(epc)
    reply = get(meter, now, 0xE7, 0xE8)
    assert reply.value(0xE7) == 1852 and reply.value(0xE8) == el.Currents(7.0, 11.0)


def test_model_itself_gives_seed_002_ea_eb():
    """EA/EB come from the load model, not overrides: the counters are anchored at 23:00."""
    meter = seed002_meter()
    reply = get(meter, T2300 + 2 * MINUTE, 0xEA, 0xEB, tid=2)
    assert reply.encode() == hx("10 81 00 02 02 88 01 05 FF 01 72 02 EA 0B 07 E2 07 1D 17 00 00 00 00 33 54"
                                " EB 0B 07 E2 07 1D 17 00 00 00 00 00 15")
    assert meter.energy_raw(T2300) == 13140 and meter.reverse_energy_raw(T2300) == 21


def test_worked_example_b_and_f():
    meter = seed002_meter(overrides={0xE7: hx("0000073C"), 0xE8: hx("00B97FFE")})
    out = meter.handle(hx("10 81 00 01 05 FF 01 02 88 01 62 02 E7 00 E8 00"), T2310)
    assert out == [hx("10 81 00 01 02 88 01 05 FF 01 72 02 E7 04 00 00 07 3C E8 04 00 B9 7F FE")]
    out = meter.handle(hx("10 81 00 06 05 FF 01 02 88 01 62 01 83 00"), T2310)
    assert out == [hx("10 81 00 06 02 88 01 05 FF 01 52 01 83 00")]
    out = meter.handle(hx("10 81 00 07 05 FF 01 02 88 01 62 02 E7 00 83 00"), T2310)
    assert out == [hx("10 81 00 07 02 88 01 05 FF 01 52 02 E7 04 00 00 07 3C 83 00")]


def test_worked_example_d_and_h():
    e2 = "0000" + "".join("%08X" % (0x3326 + slot) for slot in range(47)) + "FFFFFFFE"
    ec = "07E2071D170003 0000335400000015 0000335300000015 0000335200000015"
    meter = seed002_meter(overrides={0xE2: hx(e2), 0xEC: hx(ec)})
    assert meter.handle(hx("10 81 00 03 05 FF 01 02 88 01 61 01 E5 01 00"), T2310) == \
        [hx("10 81 00 03 02 88 01 05 FF 01 71 01 E5 00")]
    out = meter.handle(hx("10 81 00 04 05 FF 01 02 88 01 62 01 E2 00"), T2310)
    assert out == [hx("10 81 00 04 02 88 01 05 FF 01 72 01 E2 C2") + hx(e2)] and len(out[0]) == 208
    assert meter.handle(hx("10 81 00 09 05 FF 01 02 88 01 61 01 ED 07 07 E2 07 1D 17 00 03"), T2310) == \
        [hx("10 81 00 09 02 88 01 05 FF 01 71 01 ED 00")]
    out = meter.handle(hx("10 81 00 0A 05 FF 01 02 88 01 62 01 EC 00"), T2310)
    assert out == [hx("10 81 00 0A 02 88 01 05 FF 01 72 01 EC 1F") + hx(ec)]


def test_worked_example_e_notification():
    meter = seed002_meter()
    assert meter.notifications_due(T2300 - MINUTE) == []            # first call only initialises
    assert meter.notifications_due(T2300 + 2 * MINUTE) == [
        hx("10 81 00 01 02 88 01 05 FF 01 73 02 EA 0B 07 E2 07 1D 17 00 00 00 00 33 54"
           " EB 0B 07 E2 07 1D 17 00 00 00 00 00 15")]


def test_worked_example_g_instance_list():
    meter = SmartMeter()
    assert meter.instance_list_inf() == hx("10 81 00 00 0E F0 01 0E F0 01 73 01 D5 04 01 02 88 01")
    assert meter.handle(hx("10 81 00 08 05 FF 01 0E F0 01 62 01 D6 00"), T2310) == \
        [hx("10 81 00 08 0E F0 01 05 FF 01 72 01 D6 04 01 02 88 01")]
    assert meter.handle(hx("10 81 00 0B 05 FF 01 0E F0 01 63 01 D5 00"), T2310) == \
        [hx("10 81 00 0B 0E F0 01 05 FF 01 73 01 D5 04 01 02 88 01")]
    # The node profile lacks E7: INF_SNA, and a Get_SNA for it.
    assert ask(meter, el.inf_request(3, [0xE7]), T2310).esv == ESV.INF_SNA
    assert ask(meter, el.get_request(4, [0xD6, 0xE7], deoj=NODE_PROFILE), T2310).properties == \
        (Property(0xD6, hx("01028801")), Property(0xE7))


# ---------------------------------------------------------------- Get, Get_SNA, maps


def test_property_maps_match_a_real_release_f_meter():
    meter = SmartMeter(reverse=True)
    reply = get(meter, T2310, 0x9D, 0x9E, 0x9F, 0x82)
    assert reply.properties == (Property(0x9D, hx("03808188")), Property(0x9E, hx("0381E5ED")),
                                Property(0x9F, hx("19 41 41 41 60 40 40 00 62 43 00 41 40 40 43 02 02")),
                                Property(0x82, hx("00004600")))


def test_every_epc_in_the_get_map_answers_and_decodes():
    for meter in (SmartMeter(reverse=True), SmartMeter(reverse=False), SmartMeter(coefficient=None)):
        epcs = el.decode_property_map(get(meter, T2310, 0x9F).properties[0].edt)
        assert epcs == meter.get_epcs
        for epc in epcs:
            reply = get(meter, T2310, epc)
            assert reply.esv == ESV.GET_RES, hex(epc)
            el.decode_meter_property(epc, reply.properties[0].edt)   # FrameError would fail the test


def test_without_reverse_e3_e4_eb_are_refused():
    meter = SmartMeter(reverse=False)
    reply = get(meter, T2310, 0xE0, 0xE3, 0xE7, 0xEB)
    assert reply.esv == ESV.GET_SNA
    assert [(p.epc, bool(p.edt)) for p in reply.properties] == [(0xE0, True), (0xE3, False),
                                                                 (0xE7, True), (0xEB, False)]
    assert 0xE3 not in el.decode_property_map(get(meter, T2310, 0x9F).properties[0].edt)


def test_no_coefficient_means_d3_get_sna():
    meter = SmartMeter(coefficient=None)
    reply = get(meter, T2310, 0xD3)
    assert reply.esv == ESV.GET_SNA and reply.properties == (Property(0xD3),)


def test_multi_get_keeps_request_order_and_values_agree_with_accessors():
    meter = SmartMeter(seed=7, reverse=True)
    now = datetime.datetime(2024, 6, 1, 12, 34, 56)
    epcs = (0xE8, 0xE7, 0xEA, 0xE0, 0xD7, 0xE1, 0xE3, 0xEB)
    reply = get(meter, now, *epcs, tid=0xBEEF)
    assert reply.tid == 0xBEEF and reply.esv == ESV.GET_RES
    assert tuple(p.epc for p in reply.properties) == epcs
    assert reply.value(0xE7) == meter.power_w(now)
    assert reply.value(0xE8) == meter.currents_a(now)
    assert reply.value(0xE0) == meter.energy_raw(now)
    assert reply.value(0xE3) == meter.reverse_energy_raw(now)
    boundary, forward, backward = meter.fixed_time(now)
    assert boundary == datetime.datetime(2024, 6, 1, 12, 30)
    assert reply.value(0xEA) == (boundary, forward) and reply.value(0xEB) == (boundary, backward)
    assert reply.value(0xD7) == 6 and reply.value(0xE1).code == 0x01
    served = list(meter.served)[-len(epcs):]
    assert [(s.time, s.esv, s.epc) for s in served] == [(now, ESV.GET_RES, epc) for epc in epcs]
    assert served[1].value == meter.power_w(now)


def test_current_time_and_date():
    reply = get(SmartMeter(), datetime.datetime(2026, 5, 20, 14, 26, 59), 0x97, 0x98)
    assert reply.value(0x97) == datetime.time(14, 26) and reply.value(0x98) == datetime.date(2026, 5, 20)


# ---------------------------------------------------------------- Set


def test_setc_rules():
    meter = SmartMeter()
    reply = ask(meter, el.set_request(5, [(0xE5, b"\x64")]), T2310)     # day 100: refused, echoed
    assert reply.encode() == hx("10 81 00 05 02 88 01 05 FF 01 51 01 E5 01 64")
    reply = ask(meter, el.set_request(6, [(0xE5, b"\x01"), (0xE7, b"\x00\x00\x00\x01")]), T2310)
    assert reply.esv == ESV.SETC_SNA
    assert reply.properties == (Property(0xE5), Property(0xE7, b"\x00\x00\x00\x01"))
    assert get(meter, T2310, 0xE5).value(0xE5) == 1                  # the accepted part was applied
    for bad in ("07E2071D170A03", "07E2071D17000D", "07E2071D170000", "07E2131D170003", "07E2071D1700"):
        assert ask(meter, el.set_request(7, [(0xED, hx(bad))]), T2310).esv == ESV.SETC_SNA, bad
    assert ask(meter, el.set_request(8, [(0x81, b"\x08")]), T2310).esv == ESV.SET_RES
    assert get(meter, T2310, 0x81).value(0x81) == 0x08
    # The node profile accepts no Set.
    assert ask(meter, el.set_request(9, [(0x80, b"\x30")], deoj=NODE_PROFILE), T2310).esv == ESV.SETC_SNA


def test_seti_answers_only_on_failure():
    meter = SmartMeter()
    good = Frame(1, CONTROLLER, METER, ESV.SETI, (Property(0xE5, b"\x02"),))
    assert meter.handle(good.encode(), T2310) == []
    assert get(meter, T2310, 0xE5).value(0xE5) == 2
    bad = Frame(2, CONTROLLER, METER, ESV.SETI, (Property(0xE5, b"\xff"),))
    assert Frame.decode(meter.handle(bad.encode(), T2310)[0]).esv == ESV.SETI_SNA


# ---------------------------------------------------------------- silence


@pytest.mark.parametrize("data", [
    hx("10 81 00 01 05 FF 01 02 88 02 62 01 E7 00"),      # meter instance 2 does not exist
    hx("10 81 00 01 05 FF 01 01 30 01 62 01 80 00"),      # an air conditioner
    hx("10 81 00 01 05 FF 01 02 88 01 72 01 E7 00"),      # a Get_Res sent to the meter
    hx("10 81 00 01 05 FF 01 02 88 01 73 01 80 01 30"),   # an INF sent to the meter
    hx("10 81 00 01 05 FF 01 02 88 01 7A 01 EA 00"),      # an INFC_Res nobody asked for
    hx("10 81 00 01 05 FF 01 02 88 01 62 01 E7"),         # truncated
    hx("10 82 00 01 05 FF 01 02 88 01 62 01 E7 00"),      # format 2
    hx("10 81 00 01 05 FF 01 02 88 01 6E 01 E7 00 00"),   # SetGet
    b"", b"\x10", b"garbage that is long enough",
])
def test_no_answer(data):
    assert SmartMeter().handle(data, T2310) == []


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 0xFFFF), st.sampled_from([METER, NODE_PROFILE, 0x028800, 0x028802]),
       st.sampled_from([code for code in range(0x50, 0x80) if code not in (0x5E, 0x6E, 0x7E)]),
       st.lists(st.tuples(st.integers(0x80, 0xFF), st.binary(max_size=20)), min_size=1, max_size=8))
def test_any_frame_gets_zero_or_one_well_formed_answer(tid, deoj, esv, props):
    meter = _FUZZ_METER
    frame = Frame(tid, CONTROLLER, deoj, esv, tuple(Property(epc, edt) for epc, edt in props))
    replies = meter.handle(frame.encode(), T2310)
    assert len(replies) <= 1
    for reply in replies:
        answer = Frame.decode(reply)
        assert answer.tid == tid and answer.deoj == CONTROLLER
        assert [p.epc for p in answer.properties] == [epc for epc, _ in props]


_FUZZ_METER = SmartMeter(seed=30, reverse=True)


def test_instance_code_zero_reaches_the_meter():
    reply = ask(SmartMeter(), el.get_request(1, [0x80], deoj=0x028800), T2310)
    assert reply.seoj == METER and reply.value(0x80) is True


# ---------------------------------------------------------------- history


def test_e2_day_0_is_energy_at_each_past_slot_and_no_data_after_now():
    meter = SmartMeter(seed=3)
    assert ask(meter, el.set_request(1, [(0xE5, b"\x00")]), T2310).esv == ESV.SET_RES
    history = get(meter, T2310, 0xE2).value(0xE2)
    assert history.day == 0
    times = history.slot_times(T2310.date())
    for stamp, value in zip(times, history.values):
        if stamp <= T2310:
            assert value == meter.energy_raw(stamp)
        else:
            assert value is NO_DATA
    assert history.values[46] == get(meter, T2310, 0xEA).value(0xEA).raw     # 23:00 slot == EA
    assert history.values[47] is NO_DATA


def test_e2_e4_older_days_are_complete_and_monotonic():
    meter = SmartMeter(seed=4, reverse=True)
    now = datetime.datetime(2024, 5, 10, 8, 15)
    ask(meter, el.set_request(1, [(0xE5, bytes([2]))]), now)
    reply = get(meter, now, 0xE2, 0xE4)
    forward, backward = reply.value(0xE2), reply.value(0xE4)
    assert forward.day == backward.day == 2
    assert all(el.is_value(v) for v in forward.values + backward.values)
    assert list(forward.values) == sorted(forward.values) and list(backward.values) == sorted(backward.values)
    day = datetime.datetime(2024, 5, 8)
    assert forward.values[0] == meter.energy_raw(day)
    assert backward.values[47] == meter.reverse_energy_raw(day + 47 * HALF_HOUR)
    assert backward.values[47] > backward.values[0]          # the sun shone that day


def test_e2_day_99_answers_quickly_enough():
    meter = SmartMeter(seed=5)
    ask(meter, el.set_request(1, [(0xE5, bytes([99]))]), T2310)
    assert get(meter, T2310, 0xE2).value(0xE2).day == 99


def test_ec_newest_first_from_ed():
    for reverse in (False, True):
        meter = SmartMeter(seed=6, reverse=reverse)
        request = el.encode_history_request(datetime.datetime(2018, 7, 29, 23, 30), 4)
        assert ask(meter, el.set_request(1, [(0xED, request)]), T2310).esv == ESV.SET_RES
        assert get(meter, T2310, 0xED).properties[0].edt == request
        points = get(meter, T2310, 0xEC).value(0xEC).points()
        assert [p[0] for p in points] == [datetime.datetime(2018, 7, 29, 23, 30), T2300,
                                          datetime.datetime(2018, 7, 29, 22, 30), datetime.datetime(2018, 7, 29, 22)]
        assert points[0][1:] == (NO_DATA, NO_DATA)          # 23:30 has not happened yet
        for stamp, normal, backward in points[1:]:
            assert normal == meter.energy_raw(stamp)
            assert backward == (meter.reverse_energy_raw(stamp) if reverse else NO_DATA)


def test_ec_beyond_the_meter_memory_is_no_data():
    meter = SmartMeter(seed=6, start=T2310)
    for stamp in (datetime.datetime(1, 1, 1, 0, 30), T2300 - datetime.timedelta(days=101)):
        request = el.encode_history_request(stamp, 12)
        assert ask(meter, el.set_request(1, [(0xED, request)]), T2310).esv == ESV.SET_RES
        history = get(meter, T2310, 0xEC).value(0xEC)
        assert history.timestamp == stamp and history.pairs == ((NO_DATA, NO_DATA),) * 12


# ---------------------------------------------------------------- notifications


def test_notifications_across_boundaries():
    meter = SmartMeter(seed=8)
    t = datetime.datetime(2024, 1, 1, 10, 29, 50)
    assert meter.notifications_due(t) == []
    assert meter.notifications_due(t + datetime.timedelta(seconds=9)) == []     # 10:29:59
    frames = [Frame.decode(f) for f in meter.notifications_due(t + datetime.timedelta(seconds=10))]
    assert len(frames) == 1
    frame = frames[0]
    assert (frame.tid, frame.seoj, frame.deoj, frame.esv) == (1, METER, CONTROLLER, ESV.INF)
    assert [p.epc for p in frame.properties] == [0xEA]                          # no EB without reverse
    assert frame.value(0xEA) == (datetime.datetime(2024, 1, 1, 10, 30), meter.energy_raw(datetime.datetime(2024, 1, 1, 10, 30)))
    assert meter.notifications_due(datetime.datetime(2024, 1, 1, 10, 59, 59)) == []
    # Three boundaries at once (a scaled clock): three frames, oldest first, TIDs counting up.
    frames = [Frame.decode(f) for f in meter.notifications_due(datetime.datetime(2024, 1, 1, 12, 5))]
    assert [f.value(0xEA).timestamp.time() for f in frames] == [datetime.time(11), datetime.time(11, 30),
                                                                   datetime.time(12)]
    assert [f.tid for f in frames] == [2, 3, 4]
    # Midnight.
    frames = meter.notifications_due(datetime.datetime(2024, 1, 2, 0, 0, 1))
    assert Frame.decode(frames[-1]).value(0xEA).timestamp == datetime.datetime(2024, 1, 2)
    # A clock that goes back only resets the starting point; a huge jump is capped.
    assert meter.notifications_due(datetime.datetime(2023, 12, 30)) == []
    assert len(meter.notifications_due(datetime.datetime(2024, 1, 3))) == MAX_NOTIFICATION_BACKLOG


def test_reverse_notifications_carry_ea_and_eb():
    meter = SmartMeter(seed=9, reverse=True)
    meter.notifications_due(datetime.datetime(2024, 6, 1, 12, 10))
    frame = Frame.decode(meter.notifications_due(datetime.datetime(2024, 6, 1, 12, 31))[0])
    boundary, forward, backward = meter.fixed_time(datetime.datetime(2024, 6, 1, 12, 31))
    assert frame.value(0xEA) == (boundary, forward) and frame.value(0xEB) == (boundary, backward)
    assert len(frame.encode()) == 0x26


def test_infc_mode_and_its_acknowledgement():
    meter = SmartMeter(seed=10, infc=True)
    meter.notifications_due(T2300 - MINUTE)
    frame = Frame.decode(meter.notifications_due(T2300)[0])
    assert frame.esv == ESV.INFC and meter.pending_infc == (frame.tid,)
    wrong = Frame(frame.tid + 1, CONTROLLER, METER, ESV.INFC_RES, (Property(0xEA),))
    assert meter.handle(wrong.encode(), T2300) == [] and meter.pending_infc == (frame.tid,)
    assert meter.handle(el.infc_response(frame).encode(), T2300) == []
    assert meter.pending_infc == ()


# ---------------------------------------------------------------- the load model


def test_energy_is_the_exact_integral_of_power():
    meter = SmartMeter(seed=11, reverse=True)
    start = datetime.datetime(2024, 6, 1, 0, 0, 3)
    end = start + datetime.timedelta(hours=25, seconds=17)   # night, dawn (mixed signs), export, evening
    pos = neg = 0
    stamp = start
    while stamp < end:
        # Integrate second-exact: up to the next step edge or the end.
        offset = (stamp - datetime.datetime(2000, 1, 1)).total_seconds()
        length = min(STEP_SECONDS - int(offset) % STEP_SECONDS, int((end - stamp).total_seconds()))
        watts = meter.power_w(stamp)
        if watts > 0:
            pos += watts * length
        else:
            neg -= watts * length
        stamp += datetime.timedelta(seconds=length)
    (p0, n0), (p1, n1) = meter.energy_ws(start), meter.energy_ws(end)
    assert (p1 - p0, n1 - n0) == (pos, neg)
    assert pos > 0 and neg > 0
    # Raw count = floor(Ws / 360000) for 0.1 kWh with D3 = 1.
    assert meter.energy_raw(end) == p1 // 360_000 % 10 ** 6


def test_energy_never_decreases_and_power_varies():
    meter = SmartMeter(seed=12)
    stamp = datetime.datetime(2024, 3, 3, 0, 0)
    previous = meter.energy_raw(stamp)
    powers = set()
    for _ in range(24 * 12):
        stamp += datetime.timedelta(minutes=5)
        raw = meter.energy_raw(stamp)
        assert raw >= previous
        previous = raw
        powers.add(meter.power_w(stamp))
        assert 0 < meter.power_w(stamp) < 10_000           # no export without solar
    assert len(powers) > 100
    daily_kwh = el.energy_kwh(previous - meter.energy_raw(datetime.datetime(2024, 3, 3)), 1, 1)
    assert 2.0 < daily_kwh < 40.0, daily_kwh                # a plausible household day
    # Power is constant within a step and can change at the next one.
    step_start = datetime.datetime(2024, 3, 3, 19, 0, 0)
    assert len({meter.power_w(step_start + datetime.timedelta(seconds=s)) for s in range(10)}) == 1


def test_reverse_flow_at_midday():
    meter = SmartMeter(seed=13, reverse=True)
    noon = [datetime.datetime(2024, 6, 1, 11, 0) + datetime.timedelta(minutes=m) for m in range(0, 120, 3)]
    assert sum(meter.power_w(t) < 0 for t in noon) > len(noon) // 2
    assert meter.reverse_energy_raw(noon[-1]) > meter.reverse_energy_raw(noon[0])
    night = datetime.datetime(2024, 6, 1, 1, 0)
    assert meter.power_w(night) > 0
    assert meter.reverse_energy_raw(night + HALF_HOUR) == meter.reverse_energy_raw(night)
    currents = meter.currents_a(noon[0])
    if meter.power_w(noon[0]) < 0:
        assert currents.r <= 0 and currents.t <= 0


def test_currents_follow_power_at_100_volts():
    three = SmartMeter(seed=14)
    two = SmartMeter(seed=14, two_wire=True)
    for minute in range(0, 24 * 60, 37):
        t = datetime.datetime(2024, 2, 2) + datetime.timedelta(minutes=minute)
        tenths = round(three.power_w(t) / 10)
        r, t_phase = three.currents_a(t)
        assert round(r * 10) + round(t_phase * 10) == tenths
        assert two.currents_a(t) == el.Currents(tenths / 10, NO_DATA)
    assert get(two, T2310, 0xE8).properties[0].edt[2:] == hx("7FFE")


def test_deterministic_for_a_seed_whatever_the_call_order():
    start = datetime.datetime(2024, 4, 4, 4, 4)
    times = [start + datetime.timedelta(minutes=17 * k) for k in range(40)]
    a = SmartMeter(seed=21, reverse=True, start=start)
    b = SmartMeter(seed=21, reverse=True, start=start)
    c = SmartMeter(seed=22, reverse=True, start=start)
    forward = [(a.power_w(t), a.currents_a(t), a.energy_raw(t), a.reverse_energy_raw(t)) for t in times]
    backward = [(b.power_w(t), b.currents_a(t), b.energy_raw(t), b.reverse_energy_raw(t)) for t in reversed(times)]
    assert forward == backward[::-1]
    assert [c.power_w(t) for t in times] != [a.power_w(t) for t in times]
    request = el.get_request(1, [0xE7, 0xE8, 0xE0, 0xE3, 0xEA, 0xEB]).encode()
    assert a.handle(request, times[5]) == b.handle(request, times[5])


def test_counter_wraps_at_d7_digits():
    start = datetime.datetime(2024, 1, 1, 18, 0)
    meter = SmartMeter(seed=15, digits=4, start_kwh=999.9, start=start)     # raw 9999 of 10**4
    later = start + datetime.timedelta(hours=3)
    assert meter.energy_raw(start) == 9999
    assert meter.energy_raw(later) < 9999                                   # wrapped past 0
    delta = el.energy_delta(meter.energy_raw(start), meter.energy_raw(later), 4)
    ws = meter.energy_ws(later)[0] - meter.energy_ws(start)[0]
    assert delta == (ws + 9999 * 360_000) // 360_000 - 9999
    assert get(meter, later, 0xD7).value(0xD7) == 4


@pytest.mark.parametrize("unit_code,coefficient", [(0x00, 1), (0x02, 1), (0x04, 1), (0x01, 10), (0x0A, 1)])
def test_units_and_coefficient_scale_the_counts(unit_code, coefficient):
    start = datetime.datetime(2024, 1, 1)
    meter = SmartMeter(seed=16, unit_code=unit_code, coefficient=coefficient, start_kwh=1314.0, start=start,
                       digits=8)
    raw = meter.energy_raw(start)
    assert el.energy_kwh(raw, coefficient, unit_code) == pytest.approx(1314.0, abs=float(
        el.ENERGY_UNITS[unit_code] * coefficient))
    reply = get(meter, start, 0xD3, 0xE1)
    assert reply.value(0xD3) == coefficient and reply.value(0xE1).code == unit_code


def test_constructor_rejects_nonsense():
    with pytest.raises(ValueError):
        SmartMeter(unit_code=0x05)
    with pytest.raises(ValueError):
        SmartMeter(digits=9)
    with pytest.raises(ValueError):
        SmartMeter(coefficient=0)
    with pytest.raises(ValueError):
        SmartMeter(overrides={0xE2: bytes(256)})


def test_a_meter_without_ec_ed_refuses_them_and_leaves_them_out_of_its_maps():
    meter = SmartMeter(history2=False)
    get_map = el.decode_property_map(get(meter, T2310, 0x9F).properties[0].edt)
    set_map = el.decode_property_map(get(meter, T2310, 0x9E).properties[0].edt)
    assert 0xEC not in get_map and 0xED not in get_map and 0xE2 in get_map and 0xE5 in get_map
    assert set_map == (0x81, 0xE5)
    assert get(meter, T2310, 0xEC).esv == ESV.GET_SNA
    edt = el.encode_history_request(T2300, 4)
    reply = ask(meter, el.set_request(1, [(0xED, edt)]), T2310)
    assert reply.esv == ESV.SETC_SNA and reply.properties == (Property(0xED, edt),)
    # E5 + E2 still work
    assert ask(meter, el.set_request(2, [(0xE5, b"\x01")]), T2310).esv == ESV.SET_RES
    assert get(meter, T2310, 0xE2).value(0xE2).day == 1


def test_history2_is_a_url_option():
    from keilib.sim.wisun import from_options
    module = from_options({"history2": "0"})
    try:
        assert module.meter.history2 is False
    finally:
        module.close()


def test_one_minute_energy_d0_only_with_the_option():
    assert 0xD0 not in SmartMeter().get_epcs
    assert get(SmartMeter(), T2310, 0xD0).esv == ESV.GET_SNA
    meter = SmartMeter(one_minute=True, reverse=True)
    now = T2310 + datetime.timedelta(seconds=42)
    value = get(meter, now, 0xD0).value(0xD0)
    assert value.timestamp == T2310
    assert (value.normal, value.reverse) == (meter.energy_raw(T2310), meter.reverse_energy_raw(T2310))
    assert get(SmartMeter(one_minute=True), now, 0xD0).value(0xD0).reverse == NO_DATA
