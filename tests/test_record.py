import datetime

import pytest
from hypothesis import given, strategies as st

from keilib.frozen import Frozen
from keilib.record import Record, format_value

T = datetime.datetime(2019, 12, 1, 19, 12, 3)


def test_raw_line_format_byte_for_byte():
    assert Record(T, "A", "T1", 12.3, "0F").to_raw_line() == "2019/12/01 19:12:03,A,T1,12.3,0F"
    assert Record(T, "BR", "E7", 1852).to_raw_line() == "2019/12/01 19:12:03,BR,E7,1852,x"
    assert Record(T, "BR", "E0", 1314.0).to_raw_line() == "2019/12/01 19:12:03,BR,E0,1314.0,x"


@pytest.mark.parametrize("value,text", [
    (1.23456, "1.2346"), (-7.0, "-7.0"), (0.1, "0.1"), (3, "3"), (2.00004, "2.0"), (-1489, "-1489")])
def test_values_rounded_to_four_places(value, text):
    assert format_value(value) == text


@pytest.mark.parametrize("bad", [
    dict(unit=""), dict(unit="a,b"), dict(sensor="x y"), dict(data_id="\n"),
    dict(value=float("nan")), dict(value=float("inf")), dict(value="12"), dict(value=True),
    dict(value=1.7e308), dict(value=-1e15), dict(value=10 ** 15), dict(value=10 ** 250)])
def test_invalid_records_are_refused(bad):
    fields = dict(timestamp=T, unit="A", sensor="S", value=1.0, data_id="x")
    fields.update(bad)
    with pytest.raises((ValueError, TypeError)):
        Record(**fields)


ids = st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True)


@given(stamp=st.datetimes(min_value=datetime.datetime(2000, 1, 1), max_value=datetime.datetime(2099, 12, 31)),
       unit=ids, sensor=ids, data_id=ids,
       value=st.one_of(st.integers(-10**9, 10**9),
                       st.floats(-1e9, 1e9, allow_nan=False).map(lambda v: round(v, 4))))
def test_raw_line_round_trip(stamp, unit, sensor, data_id, value):
    record = Record(stamp.replace(microsecond=0), unit, sensor, value, data_id)
    again = Record.parse_raw_line(record.to_raw_line() + "\n")
    assert again.to_raw_line() == record.to_raw_line()
    assert again.value == pytest.approx(record.value)


def test_legacy_list_gets_the_time_it_is_taken():
    record = Record.from_legacy(["A", "T1", 21.5, "07"], T.replace(microsecond=123))
    assert record == Record(T, "A", "T1", 21.5, "07")
    assert Record.from_legacy(("A", "T1", "3"), T).to_raw_line() == "2019/12/01 19:12:03,A,T1,3.0,x"


@pytest.mark.parametrize("bad", [["A", "T1"], "A,T1,1", ["A", "T1", "abc", "1"], ["A", "T 1", 1, "1"], None])
def test_legacy_list_errors(bad):
    with pytest.raises((ValueError, TypeError)):
        Record.from_legacy(bad, T)


def test_value_range_bounds_every_average():
    from keilib.record import VALUE_LIMIT
    largest = Record(T, "A", "S", VALUE_LIMIT - 1)          # 15 digits: accepted, exact as a float
    assert largest.to_raw_line().endswith(",999999999999999,x") and float(largest.value) == largest.value
    assert Record(T, "A", "S", -9.99e14).value == -9.99e14
    # A sum of 10**290 readings at the bound is still finite: no mean can overflow.
    assert float(VALUE_LIMIT) * 1e290 < float("inf")
    with pytest.raises(ValueError, match=r"within \+-1e15 .*\(251 digits\)"):
        Record(T, "A", "S", 10 ** 250)
    with pytest.raises(ValueError):
        Record.from_legacy(["A", "S", "1.7e308"], T)            # keilog lists: the same bound
    with pytest.raises(ValueError):
        Record.parse_raw_line("2019/12/01 19:12:03,A,S,1e16,x")


class Point(Frozen):
    __slots__ = ("x", "y", "label")
    DEFAULTS = {"label": ""}


class Point3(Point):
    __slots__ = ("z",)


def test_frozen_value_classes_behave_as_frozen_dataclasses_did():
    import pickle
    assert Point3.FIELDS == ("x", "y", "label", "z")                 # the base's fields first
    point = Point(1, y=2)
    assert (point.x, point.y, point.label) == (1, 2, "")
    assert point == Point(1, 2, "") and hash(point) == hash(Point(1, 2, ""))
    assert point != Point3(1, 2, "", 0)                               # another class is never equal
    assert point.replace(label="a") == Point(1, 2, "a") and point.label == ""
    assert repr(point) == "Point(x=1, y=2, label='')"
    assert pickle.loads(pickle.dumps(Point3(1, 2, "a", 3))) == Point3(1, 2, "a", 3)
    with pytest.raises(AttributeError, match="immutable"):
        point.x = 5
    for args, kwargs, message in [((1,), {}, "needs a value for 'y'"), ((1, 2, "", 4), {}, "takes 3"),
                                  ((1, 2), {"w": 0}, "no field 'w'"), ((1, 2), {"x": 0}, "two values")]:
        with pytest.raises(TypeError, match=message):
            Point(*args, **kwargs)
