//! Reading the operator artefacts under deploy/ as data: the PromQL expressions of the alert rules and of the
//! Grafana dashboard, the metric names those expressions read, and the samples of a /metrics scrape.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The repository's deploy/ directory.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// The alert rule files (their unit tests, `*_test.yml`, left out).
pub fn rule_files() -> Vec<PathBuf> {
    let dir = deploy_dir().join("prometheus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/prometheus")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.ends_with("-alerts.yml") && !name.ends_with("_test.yml")
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no alert rule files in {}", dir.display());
    files
}

/// The `expr:` values of a Prometheus rule file: inline, or a block scalar (`|`, `>-` …) on the lines below.
pub fn rule_expressions(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let Some(value) = trimmed.strip_prefix("expr:") else { continue };
        let value = value.trim();
        if value.starts_with('|') || value.starts_with('>') {
            let indent = line.len() - trimmed.len();
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect();
            out.push(block.join(" "));
        } else {
            out.push(unquote(value).to_owned());
        }
    }
    out
}

fn unquote(value: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = value.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            return inner;
        }
    }
    value
}

/// Each alert's text, from its `- alert:` line to the next.
pub fn alerts(yaml: &str) -> Vec<&str> {
    yaml.split("- alert:").skip(1).collect()
}

/// Every PromQL query of a Grafana dashboard: the panels' `expr` and the template variables' queries.
pub fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    fn walk(value: &serde_json::Value, in_templating: bool, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                        ("query", serde_json::Value::String(s)) if in_templating && s.contains('(') => {
                            out.push(s.clone())
                        }
                        _ => walk(v, in_templating || key == "templating", out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, in_templating, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, false, &mut out);
    out
}

/// PromQL words that are neither functions (those are followed by a parenthesis) nor metric names.
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"];

/// The metric names a PromQL expression (or a Grafana `label_values(metric, label)` query) reads.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let expr = match expr.trim().strip_prefix("label_values(") {
        Some(rest) => rest.split([',', ')']).next().unwrap_or_default().to_owned(),
        None => expr.to_owned(),
    };
    let cleaned = strip_groupings(&strip_enclosed(&strip_enclosed(&strip_strings(&expr), '{', '}'), '[', ']'));
    let bytes = cleaned.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if c.is_ascii_digit() || c == '.' {
            // A number or a duration (1e9, 5m, 0.95): skipped whole, so its letters are not taken for names.
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':') {
                i += 1;
            }
            let word = &cleaned[start..i];
            let called = cleaned[i..].trim_start().starts_with('(');
            if !called && !KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
                names.insert(word.to_owned());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The expression with its string literals blanked (label values may contain anything).
fn strip_strings(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut quote = None;
    let mut escaped = false;
    for c in expr.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
            None => out.push(c),
        }
    }
    out
}

/// The expression with everything between `open` and `close` blanked: label matchers, ranges.
fn strip_enclosed(expr: &str, open: char, close: char) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut depth = 0usize;
    for c in expr.chars() {
        if c == open {
            depth += 1;
        } else if c == close {
            depth = depth.saturating_sub(1);
            out.push(' ');
        } else if depth == 0 {
            out.push(c);
        }
    }
    out
}

/// The expression without `by (…)`, `without (…)`, `on (…)`, `ignoring (…)`, `group_left (…)`,
/// `group_right (…)`: their parentheses hold label names, not metrics.
fn strip_groupings(expr: &str) -> String {
    let mut out = expr.to_owned();
    for keyword in ["by", "without", "on", "ignoring", "group_left", "group_right"] {
        let mut searched = 0;
        while let Some(found) = find_word(&out[searched..], keyword) {
            let at = searched + found;
            let after = at + keyword.len();
            let rest = &out[after..];
            let trimmed = rest.trim_start();
            match (trimmed.starts_with('('), trimmed.find(')')) {
                (true, Some(close)) => {
                    let end = after + (rest.len() - trimmed.len()) + close + 1;
                    out.replace_range(at..end, " ");
                    searched = at;
                }
                _ => searched = after,
            }
        }
    }
    out
}

/// Where `word` occurs as a whole word in `text`.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    text.match_indices(word).map(|(at, _)| at).find(|&at| {
        let before = text[..at].chars().next_back().is_none_or(|c| !is_word(c));
        let after = text[at + word.len()..].chars().next().is_none_or(|c| !is_word(c));
        before && after
    })
}

/// One sample line of a Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// The label set as written, without braces ("" when none).
    pub labels: String,
    pub value: f64,
}

/// The samples of a scrape (comments and blank lines skipped).
pub fn samples(scrape: &str) -> Vec<Sample> {
    scrape
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("a sample line: {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("a sample value: {line}")),
            };
            Sample { name: name.to_owned(), labels: labels.to_owned(), value }
        })
        .collect()
}

#[test]
fn metric_names_are_found_among_functions_groupings_labels_and_durations() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(r#"histogram_quantile(0.95, sum by (instance, le) (rate(a_ms_bucket{x="by (y)",le!="1e3"}[5m]))) > 500"#),
        ["a_ms_bucket"]
    );
    assert_eq!(
        names("sum(rate(a_count[10m])) > 0 and sum(rate(b_total[$__rate_interval])) == 0 and sum(c) > 0"),
        ["a_count", "b_total", "c"]
    );
    assert_eq!(names(r#"up{job="herald"} == 0 unless on (instance) d offset 5m"#), ["d", "up"]);
    assert_eq!(names("predict_linear(e[6h], 24 * 3600) < 0 and f / g < 0.5"), ["e", "f", "g"]);
    assert_eq!(names("sum without (pod) (h) * on (instance) group_left (node) i"), ["h", "i"]);
    assert_eq!(names("label_values(websocket_connections_total, instance)"), ["websocket_connections_total"]);
}

#[test]
fn rule_expressions_are_read_inline_and_from_block_scalars() {
    let yaml = "groups:\n  - rules:\n      - alert: A\n        expr: a > 1\n      - alert: B\n        expr: |\n          sum(b)\n            > 2\n        for: 5m\n      - record: c\n        expr: \"rate(c[1m])\"\n";
    assert_eq!(rule_expressions(yaml), ["a > 1", "sum(b) > 2", "rate(c[1m])"]);
    assert_eq!(alerts(yaml).len(), 2);
}

#[test]
fn samples_are_split_into_name_labels_and_value() {
    let scrape = "# HELP x a\n# TYPE x counter\nx 3\ny_bucket{a=\"1\",le=\"+Inf\"} 2\nz +Inf\n";
    assert_eq!(
        samples(scrape),
        [
            Sample { name: "x".into(), labels: "".into(), value: 3.0 },
            Sample { name: "y_bucket".into(), labels: "a=\"1\",le=\"+Inf\"".into(), value: 2.0 },
            Sample { name: "z".into(), labels: "".into(), value: f64::INFINITY },
        ]
    );
}
