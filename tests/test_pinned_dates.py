"""HTTP-date parsing pinned against the standard library, for every form and month.

``parse_http_date`` has its own calendar arithmetic (the core does not import
``email.utils``); these tests compare it with ``calendar.timegm`` over random
instants from 1970 to 2100, in the three forms RFC 9110 section 5.6.7 makes
a recipient accept, and pin the leap-year rule on the centuries.
"""

from __future__ import annotations

import calendar
import time
from email.utils import formatdate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cfauth_core import parse_http_date, parse_retry_after

START = 0  # 1970-01-01T00:00:00Z
END = calendar.timegm((2100, 12, 31, 23, 59, 59, 0, 0, 0))
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
LONG_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

instants = st.integers(min_value=START, max_value=END)


def asctime_form(stamp: int) -> str:
    t = time.gmtime(stamp)
    return (
        f"{DAYS[t.tm_wday]} {MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {t.tm_year}"
    )


def rfc850_form(stamp: int) -> str:
    t = time.gmtime(stamp)
    return (
        f"{LONG_DAYS[t.tm_wday]}, {t.tm_mday:02d}-{MONTHS[t.tm_mon - 1]}-{t.tm_year % 100:02d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


@settings(max_examples=500, derandomize=True)
@given(instants)
def test_imf_fixdate_from_the_standard_library_matches_timegm(stamp: int) -> None:
    text = formatdate(stamp, usegmt=True)
    assert parse_http_date(text, 0.0) == float(calendar.timegm(time.gmtime(stamp)))
    assert parse_http_date(text, 0.0) == float(stamp)


@settings(max_examples=300, derandomize=True)
@given(instants)
def test_asctime_form_matches_timegm(stamp: int) -> None:
    assert parse_http_date(asctime_form(stamp), 0.0) == float(stamp)


@settings(max_examples=300, derandomize=True)
@given(instants)
def test_rfc850_form_matches_timegm_when_now_is_the_same_instant(stamp: int) -> None:
    # Two-digit years resolve against ``now``: the same instant is never "more
    # than 50 years in the future", so the century is the right one.
    assert parse_http_date(rfc850_form(stamp), float(stamp)) == float(stamp)


@settings(max_examples=200, derandomize=True)
@given(instants, st.integers(min_value=0, max_value=3600))
def test_retry_after_date_is_the_distance_from_now(stamp: int, ahead: int) -> None:
    assert parse_retry_after(formatdate(stamp + ahead, usegmt=True), float(stamp)) == ahead


@pytest.mark.parametrize("year", [1971, 1999, 2000, 2023, 2024, 2099, 2100])
@pytest.mark.parametrize("month", range(1, 13))
def test_first_and_last_day_of_every_month(year: int, month: int) -> None:
    last = calendar.monthrange(year, month)[1]
    for day in (1, last):
        text = f"Mon, {day:02d} {MONTHS[month - 1]} {year} 12:34:56 GMT"
        assert parse_http_date(text, 0.0) == calendar.timegm((year, month, day, 12, 34, 56))
    after = f"Mon, {last + 1:02d} {MONTHS[month - 1]} {year} 12:34:56 GMT"
    assert parse_http_date(after, 0.0) is None


@pytest.mark.parametrize(
    ("year", "leap"), [(1900, False), (2000, True), (2023, False), (2024, True), (2100, False)]
)
def test_29_february_only_in_leap_years(year: int, leap: bool) -> None:
    text = f"Thu, 29 Feb {year} 00:00:00 GMT"
    expected = float(calendar.timegm((year, 2, 29, 0, 0, 0))) if leap else None
    assert parse_http_date(text, 0.0) == expected
    assert parse_http_date(f"Thu Feb 29 00:00:00 {year}", 0.0) == expected


def test_march_first_follows_the_last_day_of_february() -> None:
    for year in (1900, 2000, 2023, 2024):
        last_feb = parse_http_date(
            f"Mon, {calendar.monthrange(year, 2)[1]} Feb {year} 00:00:00 GMT", 0
        )
        march = parse_http_date(f"Mon, 01 Mar {year} 00:00:00 GMT", 0.0)
        assert last_feb is not None
        assert march == last_feb + 86400


@pytest.mark.parametrize(
    "text",
    [
        "Mon, 01 Jan 2024 24:00:00 GMT",
        "Mon, 01 Jan 2024 23:60:00 GMT",
        "Mon, 01 Jan 2024 23:59:61 GMT",
        "Mon, 00 Jan 2024 00:00:00 GMT",
        "Mon, 01 Xyz 2024 00:00:00 GMT",
        "Mon, 01 Jan 0000 00:00:00 GMT",
    ],
)
def test_out_of_range_fields_are_refused(text: str) -> None:
    assert parse_http_date(text, 0.0) is None


def test_leap_second_and_last_valid_fields_parse() -> None:
    base = calendar.timegm((2016, 12, 31, 23, 59, 59))
    assert parse_http_date("Sat, 31 Dec 2016 23:59:59 GMT", 0.0) == base
    assert parse_http_date("Sat, 31 Dec 2016 23:59:60 GMT", 0.0) == base + 1
    assert parse_http_date("Mon, 01 Jan 0001 00:00:00 GMT", 0.0) == -62135596800.0


@pytest.mark.parametrize(
    ("text", "wait"),
    [
        ("999999999999", 999_999_999_999.0),  # 12 digits: parsed as they are
        ("1000000000000", 1e12),  # 13 digits and more: "a very long time", 10**12 s
        ("9999999999999", 1e12),
        ("9" * 40, 1e12),
    ],
)
def test_delay_seconds_are_exact_up_to_twelve_digits_then_capped(text: str, wait: float) -> None:
    assert parse_retry_after(text, 0.0) == wait


def test_two_digit_years_count_now_in_average_gregorian_years() -> None:
    # ``now`` is exactly 50 average years (365.2425 days) after 1970: the year is
    # 2020, and "70" is 2070 (not more than 50 years ahead), not 1970.
    now = 50 * 31_556_952.0
    expected = calendar.timegm((2070, 1, 1, 0, 0, 0))
    assert parse_http_date("Wednesday, 01-Jan-70 00:00:00 GMT", now) == expected
    # A second earlier it is still 2019, and 2070 would be 51 years ahead: 1970.
    assert parse_http_date("Wednesday, 01-Jan-70 00:00:00 GMT", now - 1) == 0.0
