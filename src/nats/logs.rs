//! nats-server's log lines (`[1234] [INF] Server is ready`) relayed through `tracing`, at their
//! own level, so they reach the same sink, format and instance id as quire's lines.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// The target of relayed lines, for filters such as `info,nats_server=warn`.
pub const TARGET: &str = "nats_server";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Splits a line into its level and message. nats-server writes `[pid] [LVL] message`, or
/// `[pid] 2024/01/02 15:04:05.000000 [LVL] message` with `logtime`. Lines without a level tag
/// (a Go panic, a start-up error) are warnings: nats-server writes them only when something
/// is wrong.
pub fn parse(line: &str) -> (Level, &str) {
    let rest = strip_timestamp(strip_pid(line));
    let level = match rest.get(..5) {
        Some("[TRC]") => Level::Trace,
        Some("[DBG]") => Level::Debug,
        Some("[INF]") => Level::Info,
        Some("[WRN]") => Level::Warn,
        Some("[ERR]" | "[FTL]") => Level::Error,
        _ => return (Level::Warn, line),
    };
    (level, rest[5..].strip_prefix(' ').unwrap_or(&rest[5..]))
}

fn strip_pid(line: &str) -> &str {
    line.strip_prefix('[')
        .and_then(|r| r.split_once("] "))
        .filter(|(pid, _)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        .map_or(line, |(_, rest)| rest)
}

/// `2024/01/02 15:04:05.000000 ` (date and time tokens) when present.
fn strip_timestamp(s: &str) -> &str {
    let mut parts = s.splitn(3, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(date), Some(time), Some(rest))
            if date.len() == 10 && date.as_bytes()[4] == b'/' && time.contains(':') =>
        {
            rest
        }
        _ => s,
    }
}

/// Emits one line at its level; the empty lines of nats-server's start-up banner are dropped.
pub fn relay_line(pid: u32, line: &str) {
    let (level, message) = parse(line.trim_end_matches(['\n', '\r']));
    if message.trim().is_empty() {
        return;
    }
    match level {
        Level::Trace => tracing::trace!(target: TARGET, pid, "{message}"),
        Level::Debug => tracing::debug!(target: TARGET, pid, "{message}"),
        Level::Info => tracing::info!(target: TARGET, pid, "{message}"),
        Level::Warn => tracing::warn!(target: TARGET, pid, "{message}"),
        Level::Error => tracing::error!(target: TARGET, pid, "{message}"),
    }
}

/// Relays every line of `stream` until it closes (the child exited).
pub async fn relay(pid: u32, mut stream: impl AsyncBufRead + Unpin) {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match stream.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => relay_line(pid, &String::from_utf8_lossy(&buf)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_levels_with_and_without_time() {
        assert_eq!(
            parse("[21272] [INF] Server is ready"),
            (Level::Info, "Server is ready")
        );
        assert_eq!(
            parse("[7] 2024/01/02 15:04:05.123456 [WRN] Waiting for routing"),
            (Level::Warn, "Waiting for routing")
        );
        assert_eq!(
            parse("[7] [ERR] Error trying to connect"),
            (Level::Error, "Error trying to connect")
        );
        assert_eq!(
            parse("[7] [FTL] cannot listen"),
            (Level::Error, "cannot listen")
        );
        assert_eq!(parse("[7] [DBG] x"), (Level::Debug, "x"));
        assert_eq!(parse("[7] [TRC] y"), (Level::Trace, "y"));
        assert_eq!(parse("[7] [INF]"), (Level::Info, ""), "a blank banner line");
        assert_eq!(
            parse("[7] [INF]   Version:  2.9.10"),
            (Level::Info, "  Version:  2.9.10")
        );
    }

    #[test]
    fn untagged_lines_are_warnings_kept_whole() {
        assert_eq!(
            parse("panic: runtime error"),
            (Level::Warn, "panic: runtime error")
        );
        assert_eq!(parse("[abc] [INF] x"), (Level::Warn, "[abc] [INF] x"));
        assert_eq!(parse(""), (Level::Warn, ""));
    }
}
