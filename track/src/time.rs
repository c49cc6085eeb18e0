//! UTC timestamps as SQLite keeps them (ISO 8601 text that sorts as it reads) and back, with
//! no calendar crate: the proleptic Gregorian conversion of days since 1970 (Hinnant's).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `2026-12-07T15:46:40.123Z` (milliseconds; times before 1970 are clamped to it).
pub fn iso(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (secs, ms) = (d.as_secs() as i64, d.subsec_millis());
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, dd) = civil(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The inverse of `iso` (also without milliseconds or `Z`, and with a space for `T`).
pub fn parse_iso(s: &str) -> Option<SystemTime> {
    let s = s.trim().trim_end_matches('Z');
    let (date, clock) = s.split_once(['T', ' '])?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, dd) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, "0"));
    let mut c = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, mi, se) = (c.next()??, c.next()??, c.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&dd) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let digits: String = frac.chars().take(9).collect();
    let nanos = format!("{digits:0<9}").parse::<u32>().ok()?;
    let secs = days_from_civil(y, m, dd) * 86_400 + h * 3600 + mi * 60 + se;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `3 s`, `4 min 5 s`, `2 h 3 min`, `1 d 2 h`: how long, for people.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        // Worked by hand: 2026-12-07 is day 20794 since 1970-01-01 (56 years of which 14 leap, then 340 days); 2000-02-29 is day 11016.
        let t = UNIX_EPOCH + Duration::from_millis(20_794 * 86_400_000 + 15 * 3_600_000 + 123);
        assert_eq!(iso(t), "2026-12-07T15:00:00.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(11_016 * 86_400 + 86_399);
        assert_eq!(iso(leap), "2000-02-29T23:59:59.000Z");
        assert_eq!(iso(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn round_trip_and_refusals() {
        for secs in [
            0u64,
            951_868_799,
            1_796_655_600,
            4_102_444_800,
            253_402_300_799,
        ] {
            let t = UNIX_EPOCH + Duration::from_millis(secs * 1000 + 7);
            assert_eq!(parse_iso(&iso(t)), Some(t), "{secs}");
        }
        assert_eq!(
            parse_iso("2026-12-07 15:00:00"),
            Some(UNIX_EPOCH + Duration::from_secs(20_794 * 86_400 + 15 * 3600))
        );
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-12-07",
            "x-1-1T0:0:0",
            "2026-12-07T24:00:00",
        ] {
            assert_eq!(parse_iso(bad), None, "{bad}");
        }
        assert_eq!(human(Duration::from_secs(3725)), "1 h 2 min");
        assert_eq!(human(Duration::from_secs(65)), "1 min 5 s");
    }
}
