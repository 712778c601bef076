//! Logging for a plugin: SPIRE reads the plugin's stderr line by line and
//! logs a line that is hclog JSON (`@level`, `@message`, `@timestamp`, other
//! keys as fields) at its level. Stdout carries only the handshake line.

use std::io::Write;

/// hclog levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `debug`
    Debug,
    /// `info`
    Info,
    /// `warn`
    Warn,
    /// `error`
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// Civil date and time (UTC) of a Unix time in microseconds, as hclog
/// formats it: `2006-01-02T15:04:05.000000Z`.
pub fn timestamp(unix_micros: u64) -> String {
    let secs = unix_micros / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_micros % 1_000_000
    )
}

/// One log line as hclog JSON.
pub fn line(level: Level, message: &str, fields: &[(&str, &str)]) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or(0);
    let mut map = serde_json::Map::new();
    map.insert("@level".into(), level.as_str().into());
    map.insert("@message".into(), message.into());
    map.insert("@timestamp".into(), timestamp(u64::try_from(now).unwrap_or(u64::MAX)).into());
    map.insert("@module".into(), "zone-attestor".into());
    for (k, v) in fields {
        map.insert((*k).to_owned(), (*v).into());
    }
    serde_json::Value::Object(map).to_string()
}

/// Writes one log line to stderr.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", line(level, message, fields));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_civil_utc() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000000Z");
        // 2026-11-23T21:30:00.123456Z
        assert_eq!(timestamp(1_795_469_400_123_456), "2026-11-23T21:30:00.123456Z");
        assert_eq!(timestamp(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn lines_are_hclog_json() {
        let l: serde_json::Value = serde_json::from_str(&line(Level::Warn, "rejected", &[("check", "policy")])).unwrap();
        assert_eq!(l["@level"], "warn");
        assert_eq!(l["@message"], "rejected");
        assert_eq!(l["check"], "policy");
    }
}
