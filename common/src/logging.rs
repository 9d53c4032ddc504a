//! Logging set-up: `tracing` to standard error, as text for people or as JSON lines for log
//! collectors, with no ANSI colour when standard error is not a terminal or `NO_COLOR` is set.
//! The level comes from `RUST_LOG` (default `info`, and `warn` for AlephBFT's own logs).

use std::io::IsTerminal as _;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One line of text per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?}: use text or json")),
        }
    }
}

/// Whether output may carry ANSI colour: only to a terminal, and never with `NO_COLOR` set
/// (<https://no-color.org>).
pub fn colour_allowed(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber. Call once, at start-up.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // AlephBFT reports its state at info several times a second; its warnings stay.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,AlephBFT=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour_allowed(std::io::stderr().is_terminal()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_colour_needs_a_terminal() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert!("xml".parse::<LogFormat>().is_err());
        assert!(!colour_allowed(false));
    }
}
