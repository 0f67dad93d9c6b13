//! Audit timestamps: seconds since the epoch, shown and read as UTC.

/// Why a time could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot read time {0:?}: use 30m, 2h, 1d, @EPOCH, YYYY-MM-DD or \"YYYY-MM-DD HH:MM[:SS]\" (UTC)")]
pub struct TimeError(pub String);

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// `YYYY-MM-DD HH:MM:SS UTC` for seconds since the epoch.
pub fn format(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Read a `--since` value relative to `now` (seconds since the epoch).
pub fn parse_since(s: &str, now: u64) -> Result<u64, TimeError> {
    let bad = || TimeError(s.to_string());
    let t = s.trim();
    if let Some(e) = t.strip_prefix('@') {
        return e.parse().map_err(|_| bad());
    }
    let unit = |c: char| match c {
        's' => Some(1),
        'm' => Some(60),
        'h' => Some(3600),
        'd' => Some(86400),
        _ => None,
    };
    if let Some(mult) = t.chars().last().and_then(unit) {
        if let Ok(n) = t[..t.len() - 1].parse::<u64>() {
            return Ok(now.saturating_sub(n.saturating_mul(mult)));
        }
    }
    let (date, clock) = match t.split_once([' ', 'T']) {
        Some((d, c)) => (d, c),
        None => (t, "00:00:00"),
    };
    let num = |v: Option<&str>| v.and_then(|x| x.parse::<i64>().ok()).ok_or_else(bad);
    let mut d = date.split('-');
    let (y, mo, da) = (num(d.next())?, num(d.next())?, num(d.next())?);
    let mut c = clock.trim_end_matches('Z').split(':');
    let (h, mi) = (num(c.next())?, num(c.next())?);
    let sec = c.next().map_or(Ok(0), |v| num(Some(v)))?;
    if d.next().is_some()
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&da)
        || h > 23
        || mi > 59
        || sec > 60
    {
        return Err(bad());
    }
    let secs = days_from_civil(y, mo, da) * 86400 + h * 3600 + mi * 60 + sec;
    u64::try_from(secs).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_relative() {
        assert_eq!(format(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format(1732800000), "2024-11-28 13:20:00 UTC");
        assert_eq!(parse_since("2024-11-28 13:20", 0), Ok(1732800000));
        assert_eq!(parse_since("2024-11-28T13:20:00Z", 0), Ok(1732800000));
        assert_eq!(parse_since("2024-11-28", 0), Ok(1732752000));
        assert_eq!(parse_since("2h", 10_000), Ok(2800));
        assert_eq!(parse_since("@5", 0), Ok(5));
        assert!(parse_since("yesterday", 0).is_err());
        assert!(parse_since("2024-13-01", 0).is_err());
    }
}
