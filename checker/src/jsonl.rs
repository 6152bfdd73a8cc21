//! A history as text: JSON lines in, JSON lines out (the line formats are
//! `format`'s), with every completion paired to its invoke (`operations`) as
//! it is read. Above `history`, whose types it reads and writes.

use crate::format;
use crate::history::{Event, History, Meta, ParseError};
use crate::operations;
use std::str::FromStr;

impl History {
    /// Parses JSON lines. Blank lines are skipped; the meta line must come first;
    /// every completion must match an open invoke of the same process.
    pub fn parse(text: &str) -> Result<History, ParseError> {
        let mut meta: Option<Meta> = None;
        let mut events = Vec::new();
        let mut line_numbers = Vec::new();
        for (line_index, raw_line) in text.lines().enumerate() {
            let line = line_index + 1;
            let trimmed = raw_line.trim();
            if trimmed.is_empty() {
                continue;
            }
            let parsed =
                format::parse_line(trimmed).map_err(|message| ParseError { line, message })?;
            match (parsed, &meta) {
                (format::Line::Meta(found), None) => meta = Some(found),
                (format::Line::Meta(_), Some(_)) => {
                    return Err(ParseError {
                        line,
                        message: "a second meta line; meta must appear once, first".to_string(),
                    })
                }
                (format::Line::Event(event), None) => {
                    return Err(ParseError {
                        line,
                        message: format!(
                            "expected the meta line first, found a {:?} line",
                            event.type_name()
                        ),
                    })
                }
                (format::Line::Event(event), Some(_)) => {
                    events.push(event);
                    line_numbers.push(line);
                }
            }
        }
        let meta = meta.ok_or_else(|| ParseError {
            line: 1,
            message: "empty history: no meta line".to_string(),
        })?;
        let history = History { meta, events };
        operations::pair_operations(&history.events).map_err(|error| ParseError {
            line: line_numbers.get(error.event_index).copied().unwrap_or(0),
            message: error.message,
        })?;
        Ok(history)
    }

    /// The history as JSON lines, each ending in a newline; `parse` reads it back.
    pub fn to_jsonl(&self) -> String {
        let mut text = format::meta_to_json(&self.meta);
        text.push('\n');
        for event in &self.events {
            text.push_str(&event.to_json_line());
            text.push('\n');
        }
        text
    }
}

impl Event {
    /// This event as one JSON line (no trailing newline).
    pub fn to_json_line(&self) -> String {
        format::event_to_json(self)
    }
}

impl FromStr for History {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<History, ParseError> {
        History::parse(text)
    }
}

impl Meta {
    /// The meta line as JSON (no trailing newline).
    pub fn to_json_line(&self) -> String {
        format::meta_to_json(self)
    }
}
