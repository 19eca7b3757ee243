//! The log: tracing-subscriber's JSON lines with a `severity` field first,
//! in the words Cloud Logging maps (it ignores `level`, and has no `WARN`,
//! only `WARNING`), written by a thread of their own ([`lines`]).

use std::fmt;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent};
use tracing_subscriber::registry::LookupSpan;

/// Cloud Logging's name for a tracing level.
pub fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// Wraps the JSON formatter, adding `"severity"` to every line.
pub struct CloudJson(pub Format<Json>);

impl<S> FormatEvent<S, JsonFields> for CloudJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        // The formatter writes one object per line: `{…}\n`.
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"severity\":\"{}\",{rest}",
                severity(event.metadata().level())
            ),
            None => writer.write_str(&line),
        }
    }
}

/// How many lines may wait for the writer before a caller waits for it: a
/// log that cannot be written as fast as events arrive slows the service
/// down rather than grow without bound or drop lines.
const QUEUED_LINES: usize = 16 * 1024;

/// How many bytes the writer gathers into one `write` at most.
const BATCH_BYTES: usize = 64 * 1024;

enum Message {
    Line(Vec<u8>),
    Stop,
}

/// A [`MakeWriter`](tracing_subscriber::fmt::MakeWriter) whose lines a
/// thread of their own writes, every line that has queued meanwhile in one
/// `write`. At `info` every decision is a line, so a `write` per line was
/// a system call per delivery on the push path; here it is one per burst.
/// Lines are never dropped and stay in order.
pub struct Lines {
    queue: SyncSender<Message>,
}

/// Writes what is queued and stops the writer when dropped: keep it until
/// the last line is logged.
#[must_use = "lines still queued are lost when the process exits without it"]
pub struct LinesGuard {
    queue: SyncSender<Message>,
    writer: Option<JoinHandle<()>>,
}

/// A writer thread for `out` (stdout for `serve`), and the guard that
/// flushes it.
pub fn lines<W: Write + Send + 'static>(out: W) -> io::Result<(Lines, LinesGuard)> {
    let (queue, queued) = sync_channel(QUEUED_LINES);
    let writer = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_lines(out, &queued))?;
    Ok((
        Lines {
            queue: queue.clone(),
        },
        LinesGuard {
            queue,
            writer: Some(writer),
        },
    ))
}

fn write_lines<W: Write>(mut out: W, queued: &Receiver<Message>) {
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    while let Ok(first) = queued.recv() {
        let mut next = Some(first);
        let mut stop = false;
        while let Some(message) = next {
            match message {
                Message::Line(line) => batch.extend_from_slice(&line),
                Message::Stop => {
                    stop = true;
                    break;
                }
            }
            next = (batch.len() < BATCH_BYTES)
                .then(|| queued.try_recv().ok())
                .flatten();
        }
        // Like tracing-subscriber's own writer: a log that cannot be
        // written is not a reason to stop auditing.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if stop {
            return;
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line { queue: &self.queue }
    }
}

/// One event's line on its way to the writer (the formatter writes a whole
/// line at once).
pub struct Line<'a> {
    queue: &'a SyncSender<Message>,
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.queue
            .send(Message::Line(buf.to_vec()))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the log writer has stopped"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LinesGuard {
    fn drop(&mut self) {
        // The queue is in order, so every line sent before this is written
        // before the writer stops.
        if self.queue.send(Message::Stop).is_ok()
            && let Some(writer) = self.writer.take()
        {
            let _ = writer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    /// A `Write` into memory that counts the `write` calls it gets, each
    /// of which first passes `gate` (a test holds it to keep the writer
    /// busy while lines queue).
    #[derive(Clone, Default)]
    struct Recorded {
        written: Arc<Mutex<(Vec<u8>, usize)>>,
        gate: Arc<Mutex<()>>,
    }

    impl Write for Recorded {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            let mut written = self.written.lock().unwrap();
            written.0.extend_from_slice(buf);
            written.1 += 1;
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_of_every_thread_is_written_whole_and_in_order_before_the_guard_returns() {
        let out = Recorded::default();
        let (lines, guard) = lines(out.clone()).unwrap();
        std::thread::scope(|scope| {
            for thread in 0..4 {
                let lines = &lines;
                scope.spawn(move || {
                    for n in 0..5_000 {
                        let line = format!("{{\"thread\":{thread},\"n\":{n}}}\n");
                        lines.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                });
            }
        });
        drop(guard);
        let text = String::from_utf8(out.written.lock().unwrap().0.clone()).unwrap();
        let mut next = [0; 4];
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let thread = value["thread"].as_u64().unwrap() as usize;
            assert_eq!(value["n"], next[thread], "line {line} out of order");
            next[thread] += 1;
        }
        assert_eq!(next, [5_000; 4], "every line is written");
    }

    #[test]
    fn lines_that_queue_while_the_writer_is_busy_are_written_together() {
        let out = Recorded::default();
        let busy = out.gate.lock().unwrap();
        let (lines, guard) = lines(out.clone()).unwrap();
        for n in 0..1_000 {
            let line = format!("line {n}\n");
            lines.make_writer().write_all(line.as_bytes()).unwrap();
        }
        drop(busy);
        drop(guard);
        let (bytes, writes) = out.written.lock().unwrap().clone();
        assert_eq!(String::from_utf8(bytes).unwrap().lines().count(), 1_000);
        // Whatever the writer took before it blocked, then the rest at once.
        assert!(writes <= 2, "{writes} writes for 1,000 lines");
    }

    #[test]
    fn a_line_logged_after_the_writer_stopped_is_an_error_not_a_hang() {
        let (lines, guard) = lines(Recorded::default()).unwrap();
        drop(guard);
        let error = lines.make_writer().write_all(b"late\n").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    }
}
