//! The answer of `/api/v1/query` with a range selector: a matrix of raw
//! samples per series. Pure: bytes in, series or a typed error out.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::error::HistoryError;
use crate::time::Timestamp;

/// One series of a matrix: its labels and its samples, strictly in time order.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Every label, `__name__` included when the source returns it.
    pub labels: BTreeMap<String, String>,
    /// `(time, value)`; values may be NaN or ±Inf (kept: the feeder decides).
    pub samples: Vec<(Timestamp, f64)>,
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    data: Option<Data>,
    #[serde(rename = "errorType")]
    error_type: Option<String>,
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct RawSeries {
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

/// The longest piece of a server's own message quoted in an error.
const QUOTE_CHARS: usize = 300;

/// Parses the body of a `/api/v1/query` answer whose query was a range
/// selector. An empty result is `Ok(vec![])`: the family is absent, which
/// the ledger treats as unknown, never as zero. Anything short of a complete,
/// warning-free matrix with samples in strict time order is an error.
pub fn parse_query_response(body: &[u8]) -> Result<Vec<Series>, HistoryError> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| {
        let start = body.iter().position(|b| !b.is_ascii_whitespace());
        if start.is_some_and(|i| body[i] == b'<') {
            HistoryError::rejected(
                "the answer is an HTML page, not a Prometheus API answer (is history.url the query API's base, e.g. http://prometheus:9090 or https://mimir/prometheus?)",
            )
        } else if e.is_eof() {
            HistoryError::incomplete(format!(
                "the answer was cut short after {} bytes ({e})",
                body.len()
            ))
        } else {
            HistoryError::rejected(format!(
                "the answer is not a Prometheus API answer ({e})"
            ))
        }
    })?;
    if envelope.status != "success" {
        return Err(HistoryError::rejected(format!(
            "the query failed with status {:?}, errorType {:?}: {}",
            quote(&envelope.status),
            quote(envelope.error_type.as_deref().unwrap_or("none")),
            quote(envelope.error.as_deref().unwrap_or("no message"))
        )));
    }
    if let Some(warning) = envelope.warnings.first() {
        // Thanos (and others) answer a partial response with warnings: some
        // stores did not answer, so some samples may be missing.
        return Err(HistoryError::incomplete(format!(
            "the answer carries {} warning(s), a partial response: {}",
            envelope.warnings.len(),
            quote(warning)
        )));
    }
    let Some(data) = envelope.data else {
        return Err(HistoryError::rejected(
            "the answer has status success but no data",
        ));
    };
    if data.result_type != "matrix" {
        return Err(HistoryError::rejected(format!(
            "the answer is a {:?}, not a matrix of raw samples",
            quote(&data.result_type)
        )));
    }
    let raw: Vec<RawSeries> = serde_json::from_value(data.result)
        .map_err(|e| HistoryError::rejected(format!("the matrix is malformed ({e})")))?;
    raw.into_iter().map(series).collect()
}

fn series(raw: RawSeries) -> Result<Series, HistoryError> {
    let mut samples = Vec::with_capacity(raw.values.len());
    for (secs, text) in raw.values {
        let at = Timestamp::from_secs_f64(secs).ok_or_else(|| {
            HistoryError::rejected(format!(
                "series {} has a sample time {secs} that is not a time",
                name(&raw.metric)
            ))
        })?;
        let value = parse_value(&text).ok_or_else(|| {
            HistoryError::rejected(format!(
                "series {} has a sample value {:?} that is not a number",
                name(&raw.metric),
                quote(&text)
            ))
        })?;
        if let Some(&(last, _)) = samples.last()
            && at <= last
        {
            return Err(HistoryError::rejected(format!(
                "series {} has samples out of order ({at} after {last}); the source is broken",
                name(&raw.metric)
            )));
        }
        samples.push((at, value));
    }
    Ok(Series {
        labels: raw.metric,
        samples,
    })
}

/// A sample value as the API writes it: a decimal, `NaN`, `+Inf`, `-Inf`.
fn parse_value(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => text.parse::<f64>().ok(),
    }
}

/// A series' name and labels for an error message.
fn name(labels: &BTreeMap<String, String>) -> String {
    let family = labels.get("__name__").map_or("", String::as_str);
    let rest: Vec<String> = labels
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    quote(&format!("{family}{{{}}}", rest.join(",")))
}

/// A server's text, bounded and without control characters.
fn quote(text: &str) -> String {
    text.chars()
        .take(QUOTE_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::HistoryErrorKind as K;

    fn kind(body: &str) -> (K, String) {
        let e = parse_query_response(body.as_bytes()).unwrap_err();
        (e.kind(), e.to_string())
    }

    #[test]
    fn a_matrix_gives_series_in_time_order_with_special_values() {
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"__name__":"up","instance":"a:1"},"values":[[1700000000,"1"],[1700000030.5,"NaN"],[1700000060,"+Inf"],[1700000090,"-Inf"]]},
            {"metric":{"instance":"b:1"},"values":[]}]}}"#;
        let s = parse_query_response(body.as_bytes()).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].labels["instance"], "a:1");
        assert_eq!(s[0].samples[0], (Timestamp::from_secs(1_700_000_000), 1.0));
        assert_eq!(s[0].samples[1].0, Timestamp::from_millis(1_700_000_030_500));
        assert!(s[0].samples[1].1.is_nan());
        assert_eq!(s[0].samples[2].1, f64::INFINITY);
        assert_eq!(s[0].samples[3].1, f64::NEG_INFINITY);
        assert!(s[1].samples.is_empty());
    }

    #[test]
    fn an_empty_result_is_absent_not_an_error() {
        let body = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert_eq!(parse_query_response(body.as_bytes()).unwrap(), vec![]);
    }

    #[test]
    fn bad_answers_get_a_bounded_reason_naming_what_was_wrong() {
        let cases: &[(&str, K, &str)] = &[
            (
                "<html><body>Grafana</body></html>",
                K::HistoryRejected,
                "HTML page",
            ),
            ("\n  <!DOCTYPE html>", K::HistoryRejected, "HTML page"),
            (
                "garbage{",
                K::HistoryRejected,
                "not a Prometheus API answer",
            ),
            ("", K::HistoryIncomplete, "cut short after 0 bytes"),
            (
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"#,
                K::HistoryIncomplete,
                "cut short",
            ),
            (
                r#"{"status":"error","errorType":"execution","error":"query processing would load too many samples into memory"}"#,
                K::HistoryRejected,
                "too many samples",
            ),
            (
                r#"{"status":"success","warnings":["store 10.0.0.3:10901 unavailable"],"data":{"resultType":"matrix","result":[]}}"#,
                K::HistoryIncomplete,
                "partial response: store 10.0.0.3:10901 unavailable",
            ),
            (
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
                K::HistoryRejected,
                "not a matrix",
            ),
            (r#"{"status":"success"}"#, K::HistoryRejected, "no data"),
            (
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"m"},"values":[[2,"1"],[1,"2"]]}]}}"#,
                K::HistoryRejected,
                "out of order",
            ),
            (
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"m"},"values":[[2,"1"],[2,"2"]]}]}}"#,
                K::HistoryRejected,
                "out of order",
            ),
            (
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"m"},"values":[[2,"one"]]}]}}"#,
                K::HistoryRejected,
                "not a number",
            ),
            (
                r#"{"status":"success","data":{"resultType":"matrix","result":{"x":1}}}"#,
                K::HistoryRejected,
                "matrix is malformed",
            ),
        ];
        for (body, want, text) in cases {
            let (got, message) = kind(body);
            assert_eq!(got, *want, "{body}: {message}");
            assert!(message.contains(text), "{body}: {message}");
        }
    }
}
