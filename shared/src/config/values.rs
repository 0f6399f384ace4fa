//! How each type of configuration value is read from text and written back: numbers, sizes,
//! addresses, and the enumerations some keys take.

use std::net::SocketAddr;

use crate::size::{format_size, parse_size};

/// A configuration value as text, and back.
pub trait ConfigValue: Sized {
    fn parse_text(text: &str) -> Result<Self, String>;
    fn to_text(&self) -> String;
}

impl ConfigValue for SocketAddr {
    fn parse_text(text: &str) -> Result<Self, String> {
        text.trim()
            .parse()
            .map_err(|_| format!("`{text}` is not an address such as 127.0.0.1:8080"))
    }
    fn to_text(&self) -> String {
        self.to_string()
    }
}

/// An address to listen on, or nothing (an empty string): the listener is off.
impl ConfigValue for Option<SocketAddr> {
    fn parse_text(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        SocketAddr::parse_text(text)
            .map(Some)
            .map_err(|_| format!("`{text}` is not empty nor an address such as 127.0.0.1:9901"))
    }
    fn to_text(&self) -> String {
        self.map(|address| address.to_string()).unwrap_or_default()
    }
}

impl ConfigValue for u64 {
    fn parse_text(text: &str) -> Result<Self, String> {
        text.trim().parse().map_err(|_| format!("`{text}` is not a non-negative integer"))
    }
    fn to_text(&self) -> String {
        self.to_string()
    }
}

impl ConfigValue for usize {
    fn parse_text(text: &str) -> Result<Self, String> {
        text.trim().parse().map_err(|_| format!("`{text}` is not a non-negative integer"))
    }
    fn to_text(&self) -> String {
        self.to_string()
    }
}

impl ConfigValue for String {
    fn parse_text(text: &str) -> Result<Self, String> {
        Ok(text.to_string())
    }
    fn to_text(&self) -> String {
        self.clone()
    }
}

impl ConfigValue for bool {
    fn parse_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err(format!("`{text}` is not a boolean (true or false)")),
        }
    }
    fn to_text(&self) -> String {
        self.to_string()
    }
}

/// The format of access log lines (`access_log_format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// Apache's and nginx's `combined`, followed by the request's duration in seconds and its
    /// arena high-water mark in bytes.
    Combined,
    /// One JSON object per line.
    Json,
}

impl ConfigValue for AccessLogFormat {
    fn parse_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            "combined" => Ok(AccessLogFormat::Combined),
            "json" => Ok(AccessLogFormat::Json),
            _ => Err(format!("`{text}` is not an access log format (combined or json)")),
        }
    }
    fn to_text(&self) -> String {
        match self {
            AccessLogFormat::Combined => "combined".to_string(),
            AccessLogFormat::Json => "json".to_string(),
        }
    }
}

/// Where the access log goes (`access_log`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// No access log (no buffer, no writer thread).
    Off,
    /// Standard output (`-`).
    Stdout,
    /// A file, appended to, reopened on SIGHUP.
    File(std::path::PathBuf),
}

impl ConfigValue for AccessLogTarget {
    fn parse_text(text: &str) -> Result<Self, String> {
        match text {
            "off" => Ok(AccessLogTarget::Off),
            "-" => Ok(AccessLogTarget::Stdout),
            "" => Err("is empty: write `off`, `-` (standard output) or a file path".to_string()),
            path if path.contains('\0') => Err("a file path cannot hold a NUL byte".to_string()),
            path => Ok(AccessLogTarget::File(path.into())),
        }
    }
    fn to_text(&self) -> String {
        match self {
            AccessLogTarget::Off => "off".to_string(),
            AccessLogTarget::Stdout => "-".to_string(),
            AccessLogTarget::File(path) => path.display().to_string(),
        }
    }
}

/// A byte size, written with binary units (`256KiB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl ConfigValue for Size {
    fn parse_text(text: &str) -> Result<Self, String> {
        parse_size(text).map(Size)
    }
    fn to_text(&self) -> String {
        format_size(self.0)
    }
}

/// What the escape check scans when a slot is released (`escape_check`): for aligned words
/// pointing into the used part of the slot's arena, which the request left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EscapeCheck {
    /// No scan.
    Off,
    /// Every loaded object's writable data, and the releasing worker's thread-locals.
    Statics,
    /// `Statics`, plus the system heap as it was at the seal and the state heap.
    Full,
}

impl ConfigValue for EscapeCheck {
    fn parse_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            "off" => Ok(EscapeCheck::Off),
            "statics" => Ok(EscapeCheck::Statics),
            "full" => Ok(EscapeCheck::Full),
            _ => Err(format!("`{text}` is not one of off, statics, full")),
        }
    }
    fn to_text(&self) -> String {
        match self {
            EscapeCheck::Off => "off",
            EscapeCheck::Statics => "statics",
            EscapeCheck::Full => "full",
        }
        .to_string()
    }
}
