//! Numbers and times as Go prints them, so what the auditor writes reads like
//! what Prometheus and client_golang write: the template functions of
//! Prometheus' alert annotations (`humanize`, `humanizePercentage`,
//! `humanizeDuration`, `humanizeTimestamp`, with Go's `%.4g`) and the float
//! format of client_golang's pages (`strconv.FormatFloat(v, 'g', -1, 64)`),
//! which the simulator's page generator writes. One float formatter,
//! [`go_g`], serves both.

use std::time::Duration;

use crate::time::Timestamp;

/// `humanize`: SI prefixes and four significant digits (`42`, `1.235k`, `500m`).
pub fn humanize(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return go_g(v, Some(4));
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
    format!("{}{prefix}", go_g(v, Some(4)))
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
        format!("{}s", go_g(d.as_secs_f64(), Some(4)))
    } else {
        format!("{}ms", go_g(d.as_secs_f64() * 1000.0, Some(4)))
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

/// A float as client_golang puts it on a `/metrics` page: Go's
/// `strconv.FormatFloat(v, 'g', -1, 64)` (`1.78246873027e+09`, `0.005`, `+Inf`).
pub fn go_float(v: f64) -> String {
    go_g(v, None)
}

/// Go's `strconv.FormatFloat(v, 'g', precision, 64)`, which is also what
/// `fmt`'s `%g` and `%.Ng` print: `precision` significant digits (`Some(4)` is
/// the `%.4g` of Prometheus' templates; `Some(0)` counts as 1), or `None` for
/// the fewest digits that read back as `v`. Trailing zeros are dropped; the
/// exponent form (`1e+06`, `1.25e-05`, at least two exponent digits) is used
/// below 1e-4 and from 1e`precision` on, 1e6 for the shortest form.
/// Non-finite values print as Go's `NaN`, `+Inf` and `-Inf`; a negative zero
/// prints as `0` (Go writes `-0`).
pub fn go_g(v: f64, precision: Option<usize>) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let digits = precision.map(|p| p.max(1));
    // Rounding to the digits first gives the exponent Go decides on.
    let sci = match digits {
        Some(d) => format!("{v:.*e}", d - 1),
        None => format!("{v:e}"),
    };
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let exponent_from = digits.map_or(6, |d| i32::try_from(d).unwrap_or(i32::MAX));
    if exp < -4 || exp >= exponent_from {
        let mantissa = trim_fraction(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.unsigned_abs());
    }
    match digits {
        Some(_) => {
            let decimals = usize::try_from(exponent_from - 1 - exp).unwrap_or(0);
            trim_fraction(&format!("{v:.decimals$}")).to_owned()
        }
        // Rust's shortest round-trip form, without an exponent.
        None => format!("{v}"),
    }
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

    /// Values as Go prints them: `strconv.FormatFloat(v, 'g', -1, 64)` (what
    /// client_golang writes) and `fmt.Sprintf("%.4g", v)` (Prometheus' templates).
    #[test]
    fn floats_are_formatted_like_go() {
        let cases: &[(f64, &str, &str)] = &[
            (0.0, "0", "0"),
            (1.0, "1", "1"),
            (1.5, "1.5", "1.5"),
            (-2.5, "-2.5", "-2.5"),
            (0.005, "0.005", "0.005"),
            (192.0, "192", "192"),
            (1000.0, "1000", "1000"),
            // An exact tie rounds to even, as Go does.
            (12_345.0, "12345", "1.234e+04"),
            (9999.5, "9999.5", "1e+04"),
            (123_456.0, "123456", "1.235e+05"),
            (1e6, "1e+06", "1e+06"),
            (1_234_567.0, "1.234567e+06", "1.235e+06"),
            (1.234_567_8e9, "1.2345678e+09", "1.235e+09"),
            (1.782_468_730_27e9, "1.78246873027e+09", "1.782e+09"),
            (
                9_007_199_254_740_992.0,
                "9.007199254740992e+15",
                "9.007e+15",
            ),
            (u64::MAX as f64, "1.8446744073709552e+19", "1.845e+19"),
            (1e21, "1e+21", "1e+21"),
            (1e100, "1e+100", "1e+100"),
            (0.0001, "0.0001", "0.0001"),
            (0.000_123_456, "0.000123456", "0.0001235"),
            (1e-5, "1e-05", "1e-05"),
            (0.000_012_5, "1.25e-05", "1.25e-05"),
            (f64::NAN, "NaN", "NaN"),
            (f64::INFINITY, "+Inf", "+Inf"),
            (f64::NEG_INFINITY, "-Inf", "-Inf"),
        ];
        for (v, shortest, g4) in cases {
            assert_eq!(go_float(*v), *shortest, "FormatFloat({v}, 'g', -1)");
            assert_eq!(go_g(*v, None), *shortest, "go_g({v}, None)");
            assert_eq!(go_g(*v, Some(4)), *g4, "%.4g of {v}");
        }
        assert_eq!(go_g(1.5, Some(0)), "2", "%.0g rounds to one digit");
        assert_eq!(go_g(123.456, Some(6)), "123.456");
    }

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
