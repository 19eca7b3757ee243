//! Calendar dates (UTC) for `expires`: a day number and its `YYYY-MM-DD`
//! text. A whole date crate for one field and one comparison would be a
//! dependency without a reason; the conversion is the well-known
//! days-from-civil algorithm, table-tested below.

use std::fmt;

/// A day of the proleptic Gregorian calendar, as days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(i64);

const MS_PER_DAY: i64 = 86_400_000;

/// Why a text is not a date.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a date: {problem} (write YYYY-MM-DD, e.g. 2026-03-31)")]
pub struct DateError {
    text: String,
    problem: &'static str,
}

impl Date {
    /// The UTC day `unix_ms` falls on.
    pub fn of_unix_ms(unix_ms: i64) -> Date {
        Date(unix_ms.div_euclid(MS_PER_DAY))
    }

    /// Today (UTC), from the one wall clock.
    pub fn today() -> Date {
        Date::of_unix_ms(crate::findings::now_ms())
    }

    pub fn days_since_epoch(self) -> i64 {
        self.0
    }

    /// `days` later (earlier when negative).
    pub fn plus_days(self, days: i64) -> Date {
        Date(self.0.saturating_add(days))
    }

    /// Days from `earlier` to `self` (negative when `self` is before).
    pub fn days_after(self, earlier: Date) -> i64 {
        self.0 - earlier.0
    }

    pub fn from_ymd(year: i64, month: u32, day: u32) -> Option<Date> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(Date(days_from_civil(year, month, day)))
    }

    pub fn ymd(self) -> (i64, u32, u32) {
        civil_from_days(self.0)
    }
}

impl std::str::FromStr for Date {
    type Err = DateError;

    fn from_str(text: &str) -> Result<Date, DateError> {
        let fail = |problem| DateError {
            text: crate::event::excerpt(text),
            problem,
        };
        let b = text.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(fail("not in the form YYYY-MM-DD"));
        }
        let number = |range: std::ops::Range<usize>| -> Option<u32> {
            let part = &text[range];
            part.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| part.parse().ok())
                .flatten()
        };
        let (Some(year), Some(month), Some(day)) = (number(0..4), number(5..7), number(8..10))
        else {
            return Err(fail("not in the form YYYY-MM-DD"));
        };
        if !(1..=12).contains(&month) {
            return Err(fail("no such month"));
        }
        Date::from_ymd(i64::from(year), month, day).ok_or_else(|| fail("no such day in that month"))
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a valid civil date (H. Hinnant's algorithm:
/// years start in March so the leap day is the last of its year).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_convert_both_ways() {
        let cases = [
            ("1970-01-01", 0),
            ("1969-12-31", -1),
            ("2000-02-29", 11_016),
            ("2000-03-01", 11_017),
            ("2024-12-31", 20_088),
            ("2025-01-01", 20_089),
            ("2100-03-01", 47_541),
        ];
        for (text, days) in cases {
            let date: Date = text.parse().unwrap();
            assert_eq!(date.days_since_epoch(), days, "{text}");
            assert_eq!(date.to_string(), text);
        }
        // Every day of four centuries round-trips.
        for days in -200_000..200_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(Date::from_ymd(y, m, d), Some(Date(days)));
        }
    }

    #[test]
    fn texts_that_are_not_dates_say_why() {
        let cases = [
            ("2025-02-29", "no such day in that month"),
            ("2024-02-30", "no such day in that month"),
            ("2025-13-01", "no such month"),
            ("2025-00-10", "no such month"),
            ("2025-1-01", "not in the form YYYY-MM-DD"),
            ("2025/01/01", "not in the form YYYY-MM-DD"),
            ("2025-01-01T00:00:00Z", "not in the form YYYY-MM-DD"),
            ("+025-01-01", "not in the form YYYY-MM-DD"),
            ("", "not in the form YYYY-MM-DD"),
        ];
        for (text, problem) in cases {
            let err = text.parse::<Date>().unwrap_err();
            assert_eq!(err.problem, problem, "{text}");
            assert!(err.to_string().contains("YYYY-MM-DD"), "{err}");
        }
        assert!("2024-02-29".parse::<Date>().is_ok());
    }

    #[test]
    fn the_day_of_a_timestamp_is_its_utc_day() {
        assert_eq!(Date::of_unix_ms(0).to_string(), "1970-01-01");
        assert_eq!(Date::of_unix_ms(86_399_999).to_string(), "1970-01-01");
        assert_eq!(Date::of_unix_ms(86_400_000).to_string(), "1970-01-02");
        assert_eq!(Date::of_unix_ms(-1).to_string(), "1969-12-31");
    }
}
