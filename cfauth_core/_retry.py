"""``Retry-After``: delay-seconds or an HTTP-date (RFC 9110 section 10.2.3).

The HTTP-date parser is written here rather than borrowed from
``email.utils``, which would import half of the ``email`` package (and
``socket``, ``random`` and ``time``) into the core.
"""

from __future__ import annotations

import re

__all__ = ["parse_http_date", "parse_retry_after"]

_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_TIME = r"(?P<H>\d\d):(?P<M>\d\d):(?P<S>\d\d)"
_MON = r"(?P<mon>[A-Za-z]{3})"
# RFC 9110 section 5.6.7: IMF-fixdate, then the two obsolete forms a recipient must accept.
_IMF_FIXDATE = re.compile(
    rf"[A-Za-z]{{3}}, (?P<d>\d\d) {_MON} (?P<y>\d{{4}}) {_TIME} GMT", re.ASCII
)
_RFC850 = re.compile(rf"[A-Za-z]{{6,9}}, (?P<d>\d\d)-{_MON}-(?P<y>\d\d) {_TIME} GMT", re.ASCII)
_ASCTIME = re.compile(rf"[A-Za-z]{{3}} {_MON} (?P<d>[ \d]\d) {_TIME} (?P<y>\d{{4}})", re.ASCII)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_http_date(value: str, now: float) -> float | None:
    """Seconds since the epoch for an HTTP-date, or ``None`` if it is not one.

    ``now`` resolves the two-digit years of the rfc850 form: RFC 9110 says a
    year more than 50 years in the future is taken as the most recent past
    year with the same last two digits.
    """
    value = value.strip()
    match = _IMF_FIXDATE.fullmatch(value) or _RFC850.fullmatch(value) or _ASCTIME.fullmatch(value)
    if match is None:
        return None
    month = _MONTHS.get(match["mon"].lower())
    year, day = int(match["y"]), int(match["d"])
    hour, minute, second = int(match["H"]), int(match["M"]), int(match["S"])
    if len(match["y"]) == 2:
        this_year = 1970 + int(now // 31556952)
        year += this_year - this_year % 100
        if year > this_year + 50:
            year -= 100
    if month is None or hour > 23 or minute > 59 or second > 60:
        return None
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= day <= _DAYS_IN_MONTH[month] + (month == 2 and leap) or year < 1:
        return None
    return float(_days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second)


def parse_retry_after(value: str, now: float) -> float | None:
    """The wait in seconds a ``Retry-After`` value asks for (never negative),
    or ``None`` if the value is neither delay-seconds nor an HTTP-date."""
    text = value.strip()
    if text.isdigit() and text.isascii():
        # More than a year's worth of digits is "a very long time": no need to
        # parse a number big enough to overflow a float.
        return float(int(text)) if len(text) <= 12 else float(10**12)
    when = parse_http_date(text, now)
    if when is None:
        return None
    return max(0.0, when - now)
