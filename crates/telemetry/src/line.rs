//! One log line per event: JSON, or text on a terminal, with the span's
//! service, trace id and span id.

use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::LogFormat;
use opentelemetry::trace::TraceContextExt;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::LookupSpan;

/// The `service` a span declared, stored so log lines can name the hop even
/// when several services share one process (`cloudmart up`, the tests).
pub(crate) struct ServiceName(String);

/// Records a span's `service` field into its extensions, and remembers the
/// dispatcher it is part of for [`LineFormat`].
#[derive(Default)]
pub(crate) struct ServiceFieldLayer {
    pub(crate) dispatch: DispatchCell,
}

/// The dispatcher the subscriber was installed as, weakly held.
///
/// A log line looks up its span's trace id through the dispatcher. Asking
/// `tracing` for the current one while an event is being dispatched only
/// works for a global subscriber, so the formatter gets it from here.
#[derive(Clone, Default)]
pub(crate) struct DispatchCell(Arc<OnceLock<tracing::dispatcher::WeakDispatch>>);

impl DispatchCell {
    pub(crate) fn get(&self) -> Option<tracing::Dispatch> {
        self.0
            .get()
            .and_then(tracing::dispatcher::WeakDispatch::upgrade)
    }
}

impl<S> Layer<S> for ServiceFieldLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.dispatch.0.set(subscriber.downgrade());
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: LayerContext<'_, S>,
    ) {
        if attrs.metadata().fields().field("service").is_none() {
            return;
        }
        let mut visitor = JsonVisitor::default();
        attrs.record(&mut visitor);
        if let (Some(Value::String(name)), Some(span)) = (visitor.0.remove("service"), ctx.span(id))
        {
            span.extensions_mut().insert(ServiceName(name));
        }
    }
}

/// Formats each event as one line, JSON or text.
pub(crate) struct LineFormat {
    pub(crate) service: String,
    pub(crate) dispatch: DispatchCell,
    pub(crate) format: LogFormat,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        line.insert("timestamp".into(), Value::String(ts));
        let meta = event.metadata();
        line.insert("level".into(), Value::String(meta.level().to_string()));

        let mut service = None;
        let mut span_name = None;
        let mut leaf_id = None;
        // The nearest span that is traced: a DEBUG span under RUST_LOG=debug
        // is logged but not traced, and its lines carry its parent's ids.
        let mut traced = None;
        if let Some(scope) = ctx.event_scope() {
            for span in scope {
                if leaf_id.is_none() {
                    leaf_id = Some(span.id());
                    span_name = Some(span.name());
                }
                let ext = span.extensions();
                if service.is_none() {
                    service = ext.get::<ServiceName>().map(|s| s.0.clone());
                }
                if traced.is_none() {
                    traced = crate::ids::ids_in(&ext);
                }
            }
        }
        line.insert(
            "service".into(),
            Value::String(service.unwrap_or_else(|| self.service.clone())),
        );
        line.insert("target".into(), Value::String(meta.target().to_owned()));

        let mut visitor = JsonVisitor::default();
        event.record(&mut visitor);
        let message = visitor
            .0
            // shift_remove keeps the other fields in the order they were written.
            .shift_remove("message")
            .unwrap_or(Value::String(String::new()));
        line.insert("message".into(), message);
        for (k, v) in visitor.0 {
            if !k.starts_with("log.") {
                line.insert(k, v);
            }
        }
        if let Some(name) = span_name {
            line.insert("span".into(), Value::String(name.to_owned()));
        }
        // Exporting, the ids live in the OpenTelemetry layer's data, which is
        // reached through the dispatcher.
        if traced.is_none()
            && leaf_id.is_some()
            && let Some(scope) = ctx.event_scope()
        {
            let ids: Vec<tracing::span::Id> = scope.map(|s| s.id()).collect();
            let nearest = |d: &tracing::Dispatch| {
                ids.iter().find_map(|id| {
                    let cx = tracing_opentelemetry::get_otel_context(id, d)?;
                    let sc = cx.span().span_context().clone();
                    sc.is_valid().then_some(sc)
                })
            };
            traced = match self.dispatch.get() {
                Some(d) => nearest(&d),
                None => tracing::dispatcher::get_default(nearest),
            };
        }
        if let Some(sc) = traced {
            line.insert("trace_id".into(), Value::String(sc.trace_id().to_string()));
            line.insert("span_id".into(), Value::String(sc.span_id().to_string()));
        }
        let text = self.format.render(&line)?;
        writeln!(writer, "{text}")
    }
}

/// Collects event and span fields as JSON values.
#[derive(Default)]
pub(crate) struct JsonVisitor(Map<String, Value>);

impl Visit for JsonVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::from(format!("{value:?}")));
    }
}
