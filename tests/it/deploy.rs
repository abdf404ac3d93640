//! The Grafana dashboard and the Prometheus alert rules in `deploy/` may only use metric names
//! herald exports (`telemetry::metrics::ALL`): a renamed metric must not leave a panel blank or
//! an alert silent. `deploy/check.sh` validates the files' syntax; this pins their names.

use std::collections::BTreeSet;
use std::path::PathBuf;

use herald::telemetry::metrics::ALL;

fn deploy_file(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `herald_[a-z_]+` token in `text`, histogram series folded into their family
/// (`herald_send_duration_seconds_bucket` → `herald_send_duration_seconds`).
fn metric_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("herald_").map(|i| from + i) {
        let part_of_longer_word = at > 0
            && (bytes[at - 1].is_ascii_alphanumeric() || matches!(bytes[at - 1], b'_' | b':'));
        let end = at
            + text[at..]
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(text.len() - at);
        from = end.max(at + 1);
        if part_of_longer_word {
            continue;
        }
        let mut name = text[at..end].trim_end_matches('_');
        for suffix in ["_bucket", "_sum", "_count"] {
            name = name.strip_suffix(suffix).unwrap_or(name);
        }
        names.insert(name.to_owned());
    }
    names
}

/// Every string in a JSON document: queries, variable definitions, descriptions.
fn json_strings(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

fn dashboard_text() -> String {
    let dashboard: serde_json::Value =
        serde_json::from_str(&deploy_file("grafana/herald.json")).expect("herald.json is JSON");
    let mut text = String::new();
    json_strings(&dashboard, &mut text);
    text
}

fn unknown(names: &BTreeSet<String>) -> Vec<&str> {
    names
        .iter()
        .map(String::as_str)
        .filter(|n| !ALL.contains(n))
        .collect()
}

#[test]
fn the_scan_finds_metric_families_and_nothing_else() {
    let names = metric_names(
        "histogram_quantile(0.99, rate(herald_send_duration_seconds_bucket[5m])) \
         / herald_messages_total{job=\"herald-worker\"} dashboard:herald_x my_herald_y herald.jobs",
    );
    let expected: BTreeSet<String> = ["herald_messages_total", "herald_send_duration_seconds"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(names, expected);
}

#[test]
fn the_dashboard_uses_only_exported_metrics() {
    let names = metric_names(&dashboard_text());
    assert!(!names.is_empty(), "no herald metric found in herald.json");
    assert_eq!(
        unknown(&names),
        Vec::<&str>::new(),
        "herald.json uses metrics src/telemetry/metrics.rs does not export"
    );
}

#[test]
fn every_exported_metric_has_a_panel() {
    let names = metric_names(&dashboard_text());
    let missing: Vec<&str> = ALL
        .iter()
        .copied()
        .filter(|m| !names.contains(*m))
        .collect();
    assert_eq!(
        missing,
        Vec::<&str>::new(),
        "metrics without a panel in deploy/grafana/herald.json"
    );
}

#[test]
fn the_alert_rules_use_only_exported_metrics() {
    for file in [
        "prometheus/alerts.yml",
        "prometheus/alerts_test.yml",
        "k8s/base/prometheusrule.yaml",
    ] {
        let names = metric_names(&deploy_file(file));
        assert!(!names.is_empty(), "no herald metric found in {file}");
        assert_eq!(
            unknown(&names),
            Vec::<&str>::new(),
            "{file} uses metrics src/telemetry/metrics.rs does not export"
        );
    }
}

#[test]
fn every_alert_says_what_it_means_and_what_to_do() {
    let rules = deploy_file("prometheus/alerts.yml");
    let alerts: Vec<&str> = rules.split("- alert:").skip(1).collect();
    assert!(alerts.len() >= 8, "only {} alerts", alerts.len());
    for alert in alerts {
        let name = alert.split_whitespace().next().unwrap_or_default();
        for key in ["summary:", "description:", "runbook:", "severity:"] {
            assert!(alert.contains(key), "alert {name} has no {key}");
        }
    }
}
