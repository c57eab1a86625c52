"""parse_line's one-regex fast path gives exactly what the field-by-field rules give.

Generated lines mix every part of the format (ids, numbers, blanks, CR, a
fourth field) with the things that make a line invalid (bad ids, bad numbers,
non-ASCII bytes, missing or extra fields, 1e999); each line must give the
same Reading, with the same value type, or the same ProtocolError text.
"""

from __future__ import annotations

import random

import pytest

from keilib.errors import ProtocolError
from keilib.sensorline import _parse_fields, parse_line

GOOD_IDS = ["ar1", "unit_2", "a-b", "X", "9", "nan"]
BAD_IDS = ["", "a b", "a.b", "é", "a\x00"]
GOOD_NUMBERS = ["1", "-3", "+4", "23.25", "5.", ".5", "1e3", "1.5E-2", "007", "-0"]
BAD_NUMBERS = ["1e999", "-1e999", "nan", "inf", "0x10", "1_0", "", ".", "e3", "1e", "--1", "１", "23.25.1"]
BLANKS = ["", " ", "\t", " \t", "\r"]


def outcome(function, raw):
    try:
        reading = function(raw)
    except ProtocolError as exc:
        return ("error", str(exc))
    return ("ok", reading, type(reading.value))


def pick(rng: random.Random, good: list, bad: list) -> str:
    return rng.choice(good if rng.random() < 0.9 else bad)


def random_line(rng: random.Random) -> bytes:
    def ident() -> str:
        return pick(rng, GOOD_IDS, BAD_IDS)
    fields = [ident(), ident(), pick(rng, GOOD_NUMBERS, BAD_NUMBERS)]
    if rng.random() < 0.5:
        fields.append(ident())
    if rng.random() < 0.1:
        fields.append(ident())
    if rng.random() < 0.1:
        fields.pop(rng.randrange(len(fields)))
    text = ",".join(rng.choice(BLANKS[:4]) + field + rng.choice(BLANKS[:4]) for field in fields)
    raw = text.encode("utf-8")
    if rng.random() < 0.05:
        raw = raw.replace(b"1", b"\xff", 1)          # not UTF-8
    if rng.random() < 0.5:
        raw += b"\r"
    if rng.random() < 0.05:
        raw += rng.choice([b"\r", b" ", b"\r \t"])
    return raw


def test_fast_path_and_field_rules_agree_on_generated_lines():
    rng = random.Random(18)
    valid = 0
    for _ in range(8000):
        raw = random_line(rng)
        fast, slow = outcome(parse_line, raw), outcome(_parse_fields, raw)
        assert fast == slow, raw
        valid += fast[0] == "ok"
    assert 800 < valid < 7200        # both kinds were really exercised


@pytest.mark.parametrize("raw", [b"ar1,temp,23.25,117", b" ar1 ,\ttemp , 7 ,x\r", b"a,b,1e999", b"a,b,.5e-3",
                                 b"a,b,1,\xc3\xa9", b"a,b,1\r\r", b"a,b,1\r ", b"a,,1"])
def test_fast_path_and_field_rules_agree_on_edge_cases(raw):
    assert outcome(parse_line, raw) == outcome(_parse_fields, raw)
