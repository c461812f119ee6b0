//! `wasi:logging` and captured stdout/stderr.
//!
//! Every line becomes a `tracing` event tagged with plugin id, version and
//! invocation id, and is kept for the invocation's result. One budget of bytes
//! per invocation covers both sources, so a chatty or hostile plugin cannot
//! flood the host's logs; what exceeds it is dropped and counted.
//!
//! Plugin text reaches the host log only through `escape_for_log`: a newline
//! or carriage return in it would otherwise start a host line of the plugin's
//! making (a forged timestamp and level), and an ANSI sequence could rewrite
//! what an operator's terminal shows. The kept lines stay as the plugin wrote
//! them: they travel as JSON, which escapes them.

use crate::bindings::wasi::logging::logging::{Host, Level, add_to_linker as add_logging};
use bytes::Bytes;
use patchbay_policy::call::CallId;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use wasmtime::component::{HasData, Linker};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// A `wasi:logging` call.
    Log,
    /// A line the plugin wrote to stdout.
    Stdout,
    /// A line the plugin wrote to stderr (a panic message, say).
    Stderr,
}

/// One kept log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// The stream or interface it came through.
    pub source: LogSource,
    /// `trace` to `critical` as wasi:logging gives it; `info` for stdout,
    /// `warn` for stderr.
    pub level: &'static str,
    /// wasi:logging's context (a target, a module), or `stdout` / `stderr`.
    pub context: String,
    /// The text as the plugin wrote it, not escaped; a stdio line without its
    /// newline, split past 4096 bytes.
    pub message: String,
}

#[derive(Debug)]
struct Budget {
    remaining: usize,
    dropped_bytes: usize,
    lines: Vec<LogLine>,
}

/// The log sink of one invocation, shared by wasi:logging and the stdio pipes.
#[derive(Debug, Clone)]
pub struct LogCtx {
    /// Who is logging: its plugin, version and invocation id tag every line.
    call: Arc<CallId>,
    budget: Arc<Mutex<Budget>>,
    /// Unfinished stdout and stderr lines, shared with the pipes given to WASI.
    partial: [Arc<Mutex<Vec<u8>>>; 2],
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
        Level::Critical => "critical",
    }
}

impl LogCtx {
    /// The sink of the call `call`, keeping at most `max_bytes` of context and
    /// message text.
    pub fn new(call: Arc<CallId>, max_bytes: usize) -> Self {
        Self {
            call,
            budget: Arc::new(Mutex::new(Budget {
                remaining: max_bytes,
                dropped_bytes: 0,
                lines: Vec::new(),
            })),
            partial: Default::default(),
        }
    }

    fn budget(&self) -> std::sync::MutexGuard<'_, Budget> {
        self.budget.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, source: LogSource, level: &'static str, context: &str, message: &str) {
        let cost = context.len() + message.len();
        {
            let mut budget = self.budget();
            if cost > budget.remaining {
                budget.dropped_bytes += cost;
                return;
            }
            budget.remaining -= cost;
            budget.lines.push(LogLine {
                source,
                level,
                context: context.to_owned(),
                message: message.to_owned(),
            });
        }
        let t = &self.call;
        let (context, message) = (escape_for_log(context), escape_for_log(message));
        macro_rules! emit {
            ($lvl:ident) => {
                tracing::$lvl!(target: "patchbay::plugin", plugin = %t.plugin, version = %t.version,
                    invocation_id = %t.invocation_id, source = ?source, context = %context, "{message}")
            };
        }
        match level {
            "trace" => emit!(trace),
            "debug" => emit!(debug),
            "info" => emit!(info),
            "warn" => emit!(warn),
            _ => emit!(error),
        }
    }

    /// The lines kept, and how many bytes were dropped past the budget.
    pub fn finish(&self) -> (Vec<LogLine>, usize) {
        self.flush_partial_lines();
        let mut budget = self.budget();
        if budget.dropped_bytes > 0 {
            let t = &self.call;
            tracing::warn!(target: "patchbay::plugin", plugin = %t.plugin, version = %t.version,
                invocation_id = %t.invocation_id, dropped_bytes = budget.dropped_bytes,
                "plugin log output over the per-invocation budget was dropped");
        }
        (std::mem::take(&mut budget.lines), budget.dropped_bytes)
    }

    /// A stdout or stderr stream feeding this sink line by line.
    pub fn pipe(&self, source: LogSource) -> CapturedOutput {
        let partial = self.partial[usize::from(source == LogSource::Stderr)].clone();
        CapturedOutput {
            log: self.clone(),
            source,
            partial,
        }
    }

    /// Emit stdout/stderr text that has no trailing newline yet.
    pub fn flush_partial_lines(&self) {
        self.pipe(LogSource::Stdout).flush_partial();
        self.pipe(LogSource::Stderr).flush_partial();
    }

    /// Stderr lines kept so far (to find a panic message after a trap).
    pub fn stderr_lines(&self) -> Vec<String> {
        self.budget()
            .lines
            .iter()
            .filter(|l| l.source == LogSource::Stderr)
            .map(|l| l.message.clone())
            .collect()
    }
}

/// Plugin-supplied `text` made safe for one host log line: every character
/// that could end the line, move the cursor or reorder what a terminal shows
/// (C0 and C1 controls, DEL, the Unicode line and paragraph separators, bidi
/// overrides) is written as an escape, `\n`, `\r`, `\t` or `\u{..}`.
pub fn escape_for_log(text: &str) -> std::borrow::Cow<'_, str> {
    fn unsafe_in_a_line(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}')
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    }
    if !text.contains(unsafe_in_a_line) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_in_a_line(c) => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

impl Host for LogCtx {
    fn log(&mut self, level: Level, context: String, message: String) -> wasmtime::Result<()> {
        self.record(LogSource::Log, level_name(level), &context, &message);
        Ok(())
    }
}

struct LogCap;

impl HasData for LogCap {
    type Data<'a> = &'a mut LogCtx;
}

/// Link `wasi:logging/logging` for a store whose data holds the call's log
/// sink where `get` finds it.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut LogCtx,
) -> wasmtime::Result<()> {
    add_logging::<T, LogCap>(linker, get)
}

/// Captured stdout/stderr. Never fails a write (a plugin's `println!` must not
/// trap because the budget ran out): excess is dropped and counted instead.
#[derive(Clone)]
pub struct CapturedOutput {
    log: LogCtx,
    source: LogSource,
    partial: Arc<Mutex<Vec<u8>>>,
}

/// Longest stdout/stderr line kept whole; longer ones are split.
const MAX_LINE: usize = 4096;

impl CapturedOutput {
    fn push(&self, bytes: &[u8]) {
        let mut partial = self.partial.lock().unwrap_or_else(|e| e.into_inner());
        for &b in bytes {
            if b == b'\n' || partial.len() >= MAX_LINE {
                self.emit_line(&partial);
                partial.clear();
                if b == b'\n' {
                    continue;
                }
            }
            partial.push(b);
        }
    }

    fn emit_line(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let level = if self.source == LogSource::Stderr {
            "warn"
        } else {
            "info"
        };
        let context = if self.source == LogSource::Stderr {
            "stderr"
        } else {
            "stdout"
        };
        self.log
            .record(self.source, level, context, text.trim_end_matches('\r'));
    }

    fn flush_partial(&self) {
        let mut partial = self.partial.lock().unwrap_or_else(|e| e.into_inner());
        if !partial.is_empty() {
            self.emit_line(&partial);
            partial.clear();
        }
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(max: usize) -> LogCtx {
        LogCtx::new(
            Arc::new(CallId {
                workspace: "ws".into(),
                connection: "c".into(),
                plugin: "p".into(),
                version: "1.0.0".into(),
                operation: "op".into(),
                invocation_id: "inv".into(),
            }),
            max,
        )
    }

    #[test]
    fn splits_captured_output_into_lines() {
        let log = ctx(1024);
        let out = log.pipe(LogSource::Stdout);
        out.push(b"one\ntw");
        out.push(b"o\n");
        out.push(b"three");
        let (lines, dropped) = log.finish();
        let messages: Vec<_> = lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["one", "two", "three"]);
        assert_eq!(dropped, 0);
    }

    #[test]
    fn drops_and_counts_lines_past_the_budget() {
        let mut log = ctx(20);
        log.log(Level::Info, "c".into(), "0123456789".into())
            .expect("log");
        log.log(Level::Info, "c".into(), "0123456789".into())
            .expect("log");
        let (lines, dropped) = log.finish();
        assert_eq!(lines.len(), 1);
        assert_eq!(dropped, 11);
    }

    /// Forms a hostile plugin uses to start a host line of its own, or to
    /// paint over one on an operator's terminal.
    const FORGERIES: [(&str, &str); 9] = [
        ("lf", "ok\n2026-01-01T00:00:00Z ERROR patchbay::api: forged"),
        (
            "crlf",
            "ok\r\n2026-01-01T00:00:00Z ERROR patchbay::api: forged",
        ),
        ("cr", "ok\r2026-01-01T00:00:00Z ERROR patchbay::api: forged"),
        ("line separator", "ok\u{2028}ERROR forged"),
        ("paragraph separator", "ok\u{2029}ERROR forged"),
        ("next line (C1)", "ok\u{85}ERROR forged"),
        (
            "ansi",
            "ok\u{1b}[2K\u{1b}[1G\u{1b}[31mERROR forged\u{1b}[0m",
        ),
        ("nul", "ok\0ERROR forged"),
        ("bidi override", "ok\u{202e}degrof RORRE"),
    ];

    #[test]
    fn escapes_every_character_that_could_break_a_log_line() {
        for (form, text) in FORGERIES {
            let escaped = escape_for_log(text);
            assert!(
                !escaped
                    .contains(|c: char| c.is_control()
                        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202e}')),
                "{form}: {escaped:?}"
            );
            assert!(
                escaped.starts_with("ok") && escaped.contains("forged")
                    || escaped.contains("degrof"),
                "{form}: {escaped}"
            );
        }
        assert_eq!(escape_for_log("a\nb\tc\u{1b}"), "a\\nb\\tc\\u{1b}");
        assert!(matches!(
            escape_for_log("plain text, ünïcode ✓"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    /// Captures what a text-format host subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Keeps a second dispatcher alive for the whole test process. With
    /// only one, tracing-core asks the *registering thread's* default about
    /// a new call site, so a call site first reached by another test thread
    /// (no subscriber there) would be disabled for this test's subscriber too.
    fn interest_per_thread() {
        static KEEPER: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
        KEEPER.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
    }

    #[test]
    fn a_plugin_message_is_one_host_line_with_its_tags_whatever_it_holds() {
        interest_per_thread();
        for (form, text) in FORGERIES {
            let out = Captured::default();
            let sink = out.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || sink.clone())
                .with_ansi(false)
                .with_max_level(tracing::Level::TRACE)
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                let mut log = ctx(1 << 20);
                log.log(Level::Error, text.into(), text.into())
                    .expect("log");
                let stdout = log.pipe(LogSource::Stdout);
                // Captured output splits at \n itself; each piece is one line.
                stdout.push(text.as_bytes());
                stdout.push(b"\n");
                log.finish();
            });
            let written = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
            let pieces = 1 + text.split('\n').count();
            let lines: Vec<&str> = written.lines().collect();
            assert_eq!(lines.len(), pieces, "{form}: {written}");
            assert!(!written.contains('\u{1b}'), "{form}: ESC in {written:?}");
            assert!(
                !written.contains(['\r', '\0', '\u{2028}', '\u{2029}', '\u{85}']),
                "{form}: {written:?}"
            );
            for line in lines {
                assert!(
                    line.contains("plugin=p") && line.contains("invocation_id=inv"),
                    "{form}: a line without its tags: {line}"
                );
            }
        }
    }
}
