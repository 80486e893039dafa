//! Numbers and times as Go prints them, so what the auditor writes reads like
//! what Prometheus and client_golang write: the template functions of
//! Prometheus' alert annotations (`humanize`, `humanizePercentage`,
//! `humanizeDuration`, `humanizeTimestamp`) and Go's `%.4g`.

use std::time::Duration;

use crate::time::Timestamp;

/// `humanize`: SI prefixes and four significant digits (`42`, `1.235k`, `500m`).
pub fn humanize(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return go_g4(v);
    }
    let mut v = v;
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    format!("{}{prefix}", go_g4(v))
}

/// `humanizePercentage`: a ratio as `humanize` of its percentage.
pub fn humanize_percentage(ratio: f64) -> String {
    format!("{}%", humanize(ratio * 100.0))
}

/// `humanizeDuration`: `7d 0h 0m 0s`, `1h 2m 3s`, `4m 5s`, `42s`, `250ms`.
pub fn humanize_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if days != 0 {
        format!("{days}d {hours}h {minutes}m {seconds}s")
    } else if hours != 0 {
        format!("{hours}h {minutes}m {seconds}s")
    } else if minutes != 0 {
        format!("{minutes}m {seconds}s")
    } else if secs >= 1 || d.is_zero() {
        format!("{}s", go_g4(d.as_secs_f64()))
    } else {
        format!("{}ms", go_g4(d.as_secs_f64() * 1000.0))
    }
}

/// `humanizeTimestamp`: Go's `time.Time` string in UTC,
/// `2023-11-14 22:13:20 +0000 UTC`, with milliseconds when there are any.
pub fn humanize_timestamp(t: Timestamp) -> String {
    let (date, time, millis) = civil(t);
    let fraction = if millis == 0 {
        String::new()
    } else {
        format!(".{millis:03}").trim_end_matches('0').to_owned()
    };
    format!("{date} {time}{fraction} +0000 UTC")
}

/// RFC 3339 in UTC with milliseconds, as Alertmanager's API takes it.
pub fn rfc3339(t: Timestamp) -> String {
    let (date, time, millis) = civil(t);
    format!("{date}T{time}.{millis:03}Z")
}

/// The UTC date (`YYYY-MM-DD`), time of day (`HH:MM:SS`) and milliseconds of `t`.
fn civil(t: Timestamp) -> (String, String, i64) {
    let millis = t.as_millis();
    let secs = millis.div_euclid(1000);
    let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil, valid for the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        format!(
            "{:02}:{:02}:{:02}",
            of_day / 3600,
            of_day / 60 % 60,
            of_day % 60
        ),
        millis.rem_euclid(1000),
    )
}

/// Go's `%.4g`: four significant digits, trailing zeros dropped, exponent
/// form below 1e-4 and from 1e4 on.
pub fn go_g4(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if v == 0.0 {
        return "0".into();
    }
    // Rounding to four digits first gives the exponent Go decides on.
    let sci = format!("{v:.3e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..4).contains(&exp) {
        let mantissa = trim_fraction(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    let decimals = usize::try_from(3 - exp).unwrap_or(0);
    trim_fraction(&format!("{v:.decimals$}")).to_owned()
}

fn trim_fraction(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn prometheus_number_formats() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (42.0, "42"),
            (999.0, "999"),
            (1000.0, "1k"),
            (1234.0, "1.234k"),
            (12_345.0, "12.35k"),
            (2_500_000.0, "2.5M"),
            (0.5, "500m"),
            (99.87, "99.87"),
        ];
        for (v, want) in cases {
            assert_eq!(humanize(*v), *want, "humanize({v})");
        }
        assert_eq!(go_g4(12_345.0), "1.234e+04");
        assert_eq!(go_g4(0.000_012_5), "1.25e-05");
        assert_eq!(humanize_percentage(1.0), "100%");
        assert_eq!(humanize_percentage(0.5), "50%");

        let durations: &[(Duration, &str)] = &[
            (7 * DAY, "7d 0h 0m 0s"),
            (Duration::from_secs(3723), "1h 2m 3s"),
            (Duration::from_secs(245), "4m 5s"),
            (Duration::from_secs(42), "42s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::ZERO, "0s"),
        ];
        for (d, want) in durations {
            assert_eq!(humanize_duration(*d), *want, "{d:?}");
        }

        let times: &[(i64, &str, &str)] = &[
            (
                1_700_000_000_000,
                "2023-11-14 22:13:20 +0000 UTC",
                "2023-11-14T22:13:20.000Z",
            ),
            (
                3_600_000,
                "1970-01-01 01:00:00 +0000 UTC",
                "1970-01-01T01:00:00.000Z",
            ),
            (
                1_709_164_800_500,
                "2024-02-29 00:00:00.5 +0000 UTC",
                "2024-02-29T00:00:00.500Z",
            ),
            (
                1_704_067_199_123,
                "2023-12-31 23:59:59.123 +0000 UTC",
                "2023-12-31T23:59:59.123Z",
            ),
        ];
        for (millis, human, api) in times {
            let t = Timestamp::from_millis(*millis);
            assert_eq!(humanize_timestamp(t), *human);
            assert_eq!(rfc3339(t), *api);
        }
    }
}
