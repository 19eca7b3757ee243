//! The JSON log format: tracing-subscriber's JSON lines with a `severity`
//! field first, in the words Cloud Logging maps (it ignores `level`, and
//! has no `WARN`, only `WARNING`).

use std::fmt;

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
