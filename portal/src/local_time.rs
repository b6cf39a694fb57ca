//! Times in the citizen's time zone: Estonian time (Europe/Tallinn), UTC+2 in winter and UTC+3
//! from the last Sunday of March to the last Sunday of October, changing at 01:00 UTC as the EU
//! rules (Directive 2000/84/EC) say. Pure code: times come in as unix milliseconds.

/// A civil date and time of day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    /// The year.
    pub year: i64,
    /// The month, 1–12.
    pub month: u32,
    /// The day of the month, 1–31.
    pub day: u32,
    /// Hours, 0–23.
    pub hour: u32,
    /// Minutes, 0–59.
    pub minute: u32,
    /// Seconds, 0–59.
    pub second: u32,
}

/// The offset from UTC in Tallinn at `ms`, in seconds.
pub fn tallinn_offset_seconds(ms: i64) -> i64 {
    let secs = ms.div_euclid(1000);
    let year = civil_from_days(secs.div_euclid(86_400)).0;
    let start = last_sunday(year, 3) * 86_400 + 3600;
    let end = last_sunday(year, 10) * 86_400 + 3600;
    if (start..end).contains(&secs) {
        3 * 3600
    } else {
        2 * 3600
    }
}

/// `ms` as Tallinn civil time.
pub fn tallinn(ms: i64) -> Civil {
    let local = ms.div_euclid(1000) + tallinn_offset_seconds(ms);
    let (year, month, day) = civil_from_days(local.div_euclid(86_400));
    let rem = local.rem_euclid(86_400);
    let part = |n: i64| u32::try_from(n).unwrap_or(0);
    Civil {
        year,
        month,
        day,
        hour: part(rem / 3600),
        minute: part(rem % 3600 / 60),
        second: part(rem % 60),
    }
}

/// `26.11.2026 kell 12:15` (Estonian) or `26 Nov 2026, 12:15` (English).
pub fn display(ms: i64, lang: crate::i18n::Lang) -> String {
    let c = tallinn(ms);
    match lang {
        crate::i18n::Lang::Et => format!(
            "{:02}.{:02}.{} kell {:02}:{:02}",
            c.day, c.month, c.year, c.hour, c.minute
        ),
        crate::i18n::Lang::En => {
            const MONTHS: [&str; 12] = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ];
            let month = MONTHS
                .get(c.month.saturating_sub(1) as usize)
                .copied()
                .unwrap_or("?");
            format!(
                "{} {month} {}, {:02}:{:02}",
                c.day, c.year, c.hour, c.minute
            )
        }
    }
}

/// `2026-11-26T12:15:03+02:00`: ISO 8601 with the Tallinn offset, for exports.
pub fn iso(ms: i64) -> String {
    let c = tallinn(ms);
    let offset = tallinn_offset_seconds(ms) / 3600;
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+{offset:02}:00",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// `2026-11-26` of `ms` in Tallinn, as a date input shows it.
pub fn date(ms: i64) -> String {
    let c = tallinn(ms);
    format!("{:04}-{:02}-{:02}", c.year, c.month, c.day)
}

/// The unix milliseconds at which the Tallinn day `YYYY-MM-DD` starts, or `None` when `s` is
/// not such a date.
pub fn day_start(s: &str) -> Option<i64> {
    let mut parts = s.splitn(3, '-');
    let year: i64 = parts.next().filter(|p| p.len() == 4)?.parse().ok()?;
    let month: u32 = parts.next().filter(|p| p.len() == 2)?.parse().ok()?;
    let day: u32 = parts.next().filter(|p| p.len() == 2)?.parse().ok()?;
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || !(1970..=9999).contains(&year)
    {
        return None;
    }
    let midnight_utc = days_from_civil(year, month, day) * 86_400;
    // The offset at local midnight equals the offset two hours after UTC midnight minus the
    // offset: changes happen at 01:00 UTC, far from local midnight.
    let offset = tallinn_offset_seconds(midnight_utc * 1000);
    Some((midnight_utc - offset) * 1000)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match (
        i32::try_from(year),
        u8::try_from(month)
            .ok()
            .and_then(|m| time::Month::try_from(m).ok()),
    ) {
        (Ok(year), Some(month)) => u32::from(month.length(year)),
        _ => 0,
    }
}

/// The day number (days since 1970-01-01) of the last Sunday of `month` in `year`.
fn last_sunday(year: i64, month: u32) -> i64 {
    let last = days_from_civil(year, month, days_in_month(year, month));
    // 1970-01-01 was a Thursday: weekday 0 = Sunday is (days + 4) mod 7.
    last - (last + 4).rem_euclid(7)
}

/// The Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;

/// Days since 1970-01-01 of a date (the `time` crate's calendar); 0 for a date it cannot hold.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let date = (|| {
        let month = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
        time::Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?)
            .ok()
    })();
    date.map_or(0, |d| i64::from(d.to_julian_day()) - UNIX_EPOCH_JULIAN_DAY)
}

/// The date of a day since 1970-01-01 (the `time` crate's calendar); 1970-01-01 for a day it
/// cannot hold.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    i32::try_from(days + UNIX_EPOCH_JULIAN_DAY)
        .ok()
        .and_then(|jd| time::Date::from_julian_day(jd).ok())
        .map_or((1970, 1, 1), |d| {
            (
                i64::from(d.year()),
                u32::from(u8::from(d.month())),
                u32::from(d.day()),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::i18n::Lang;

    #[test]
    fn tallinn_follows_the_eu_summer_time_rules() {
        // 2026: summer time from 29 March 01:00 UTC to 25 October 01:00 UTC.
        let start = days_from_civil(2026, 3, 29) * 86_400_000 + 3_600_000;
        assert_eq!(tallinn_offset_seconds(start - 1), 7200);
        assert_eq!(tallinn_offset_seconds(start), 10800);
        let end = days_from_civil(2026, 10, 25) * 86_400_000 + 3_600_000;
        assert_eq!(tallinn_offset_seconds(end - 1), 10800);
        assert_eq!(tallinn_offset_seconds(end), 7200);
        // 2026-11-26T12:00:00.123Z is 14:00 in Tallinn.
        assert_eq!(
            display(1_795_694_400_123, Lang::Et),
            "26.11.2026 kell 14:00"
        );
        assert_eq!(display(1_795_694_400_123, Lang::En), "26 Nov 2026, 14:00");
        assert_eq!(iso(1_795_694_400_123), "2026-11-26T14:00:00+02:00");
        assert_eq!(iso(1_784_376_000_000), "2026-07-18T15:00:00+03:00"); // 12:00 UTC
    }

    #[test]
    fn dates_parse_to_tallinn_midnight_and_garbage_does_not() {
        let ms = day_start("2026-11-26").unwrap();
        assert_eq!(iso(ms), "2026-11-26T00:00:00+02:00");
        assert_eq!(
            iso(day_start("2026-07-18").unwrap()),
            "2026-07-18T00:00:00+03:00"
        );
        assert_eq!(date(ms), "2026-11-26");
        for bad in [
            "",
            "2026-13-01",
            "2026-02-30",
            "26.11.2026",
            "2026-1-01",
            "+2026-01-01",
            "2026-01-01x",
            "99999-01-01",
        ] {
            assert_eq!(day_start(bad), None, "{bad}");
        }
        assert!(day_start("2024-02-29").is_some());
    }
}
