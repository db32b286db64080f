//! Child log lines, re-emitted by the supervisor with the child's name. Children log like
//! every pvbus process (`pvbus_bus::logging`): compact lines, or JSON objects when
//! `PVBUS_LOG_FORMAT=json` (which they inherit). A compact line loses its own timestamp
//! and level to the supervisor's (no doubled prefix); a JSON line stays one JSON object,
//! with a `"process"` member added, and is written through unchanged otherwise.

use std::io::Write;

use serde_json::{Map, Value};
use tracing::Level;

/// Which output of the child a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A child's log line, understood.
#[derive(Debug, Clone, PartialEq)]
pub enum ChildLine<'a> {
    /// A tracing JSON object (or any JSON object).
    Json(Map<String, Value>),
    /// Text, with the level when the line carried one.
    Text { level: Option<Level>, text: &'a str },
}

pub fn parse(line: &str) -> ChildLine<'_> {
    let trimmed = line.trim_end();
    if trimmed.starts_with('{')
        && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(trimmed)
    {
        return ChildLine::Json(map);
    }
    let mut rest = trimmed.trim_start();
    if let Some((first, after)) = rest.split_once(char::is_whitespace)
        && looks_like_timestamp(first)
    {
        rest = after.trim_start();
    }
    if let Some((word, after)) = rest.split_once(char::is_whitespace)
        && let Some(level) = level_of(word)
    {
        return ChildLine::Text {
            level: Some(level),
            text: after.trim_start(),
        };
    }
    ChildLine::Text {
        level: None,
        text: rest,
    }
}

fn looks_like_timestamp(word: &str) -> bool {
    let b = word.as_bytes();
    b.len() >= 19 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[10] == b'T'
}

fn level_of(word: &str) -> Option<Level> {
    match word {
        "TRACE" => Some(Level::TRACE),
        "DEBUG" => Some(Level::DEBUG),
        "INFO" => Some(Level::INFO),
        "WARN" => Some(Level::WARN),
        "ERROR" => Some(Level::ERROR),
        _ => None,
    }
}

/// Re-emits one line of child `name`. `json_out`: the supervisor itself logs JSON.
pub fn forward(name: &str, stream: Stream, line: &str, json_out: bool) {
    match parse(line) {
        ChildLine::Json(mut map) => {
            if json_out {
                map.entry("process")
                    .or_insert_with(|| Value::String(name.to_string()));
                let mut out = serde_json::to_string(&map).unwrap_or_default();
                out.push('\n');
                // One write per line, so lines of different children never interleave.
                let _ = std::io::stderr().lock().write_all(out.as_bytes());
            } else {
                let level = map
                    .get("level")
                    .and_then(Value::as_str)
                    .and_then(level_of)
                    .unwrap_or(Level::INFO);
                let mut fields = match map.remove("fields") {
                    Some(Value::Object(f)) => f,
                    _ => Map::new(),
                };
                let message = match fields.remove("message") {
                    Some(Value::String(s)) => s,
                    _ => String::new(),
                };
                let text = if fields.is_empty() {
                    message
                } else {
                    let extra: Vec<String> =
                        fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("{message} {}", extra.join(" "))
                };
                emit(name, level, &text);
            }
        }
        ChildLine::Text { level, text } => {
            if text.is_empty() {
                return;
            }
            // A line without a level on stderr is a panic or a usage error: worth a warning.
            let level = level.unwrap_or(match stream {
                Stream::Stdout => Level::INFO,
                Stream::Stderr => Level::WARN,
            });
            emit(name, level, text);
        }
    }
}

fn emit(name: &str, level: Level, text: &str) {
    match level {
        Level::ERROR => tracing::error!(process = name, "{text}"),
        Level::WARN => tracing::warn!(process = name, "{text}"),
        Level::INFO => tracing::info!(process = name, "{text}"),
        Level::DEBUG => tracing::debug!(process = name, "{text}"),
        Level::TRACE => tracing::trace!(process = name, "{text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_lines_lose_their_timestamp_and_level() {
        assert_eq!(
            parse("2026-11-25T02:30:00.123456Z  WARN bus connection lost error=\"refused\"\n"),
            ChildLine::Text {
                level: Some(Level::WARN),
                text: "bus connection lost error=\"refused\""
            }
        );
        assert_eq!(
            parse(" INFO connected"),
            ChildLine::Text {
                level: Some(Level::INFO),
                text: "connected"
            }
        );
        assert_eq!(
            parse("thread 'main' panicked at src/main.rs:3:5"),
            ChildLine::Text {
                level: None,
                text: "thread 'main' panicked at src/main.rs:3:5"
            }
        );
    }

    #[test]
    fn json_lines_stay_json() {
        let line = r#"{"timestamp":"2026-11-25T02:30:00Z","level":"INFO","fields":{"message":"connected","process":"relays"},"target":"pvbus_bus::client"}"#;
        match parse(line) {
            ChildLine::Json(map) => {
                assert_eq!(map["level"], "INFO");
                assert_eq!(map["fields"]["message"], "connected");
            }
            other => panic!("{other:?}"),
        }
        // Braces that are not JSON are text.
        assert!(matches!(
            parse("{not json"),
            ChildLine::Text { level: None, .. }
        ));
    }
}
