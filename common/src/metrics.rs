//! Prometheus metrics in the text exposition format.

/// One Prometheus metric in text format.
pub fn metric(name: &str, help: &str, kind: &str, value: impl std::fmt::Display) -> String {
    format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n")
}
