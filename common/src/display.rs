//! Instants for people: "in 19 days, 2026-12-20" rather than raw Unix seconds.

use scrip_spec::UnixSeconds;

/// The UTC calendar date of an instant, `YYYY-MM-DD`.
pub fn date(at: UnixSeconds) -> String {
    let (y, m, d) = civil_from_days(at / 86_400);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The UTC date and minute of an instant, `YYYY-MM-DD HH:MM UTC`.
pub fn date_time(at: UnixSeconds) -> String {
    let secs = at % 86_400;
    format!(
        "{} {:02}:{:02} UTC",
        date(at),
        secs / 3600,
        secs % 3600 / 60
    )
}

/// An instant relative to `now` and absolute: "in 19 days, 2026-12-20", "in 4 minutes,
/// 2026-12-01 17:32 UTC", "2 hours ago, 2026-12-01 15:30 UTC". The minute is shown when the
/// instant is less than two days away, where the date alone would say too little.
pub fn when(at: UnixSeconds, now: UnixSeconds) -> String {
    let (span, future) = if at >= now {
        (at - now, true)
    } else {
        (now - at, false)
    };
    let relative = match span {
        0..60 => return format!("now, {}", date_time(at)),
        60..3_600 => plural(span / 60, "minute"),
        3_600..172_800 => plural(span / 3_600, "hour"),
        _ => plural(span / 86_400, "day"),
    };
    let absolute = if span < 172_800 {
        date_time(at)
    } else {
        date(at)
    };
    if future {
        format!("in {relative}, {absolute}")
    } else {
        format!("{relative} ago, {absolute}")
    }
}

fn plural(n: u64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_the_calendar() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(1_796_083_200), "2026-12-01");
        assert_eq!(
            date_time(1_796_083_200 + 17 * 3600 + 32 * 60 + 59),
            "2026-12-01 17:32 UTC"
        );
    }

    #[test]
    fn instants_read_relative_and_absolute() {
        let now = 1_796_083_200;
        assert_eq!(when(now + 19 * 86_400 + 5, now), "in 19 days, 2026-12-20");
        assert_eq!(when(now + 240, now), "in 4 minutes, 2026-12-01 00:04 UTC");
        assert_eq!(when(now - 7_200, now), "2 hours ago, 2026-11-30 22:00 UTC");
        assert_eq!(when(now + 86_400, now), "in 24 hours, 2026-12-02 00:00 UTC");
        assert_eq!(when(now, now), "now, 2026-12-01 00:00 UTC");
    }
}
