//! Trace and span ids for a process that exports nothing.
//!
//! Without `OTEL_EXPORTER_OTLP_ENDPOINT` no span ever leaves the process, so
//! building an OpenTelemetry span for each `tracing` span (its attributes,
//! its builder, a sampler call, an end) would be work for nobody. What must
//! stay is what a trainee sees: a `trace_id` and `span_id` on every log
//! line, and `traceparent` carried in and out of every hop. [`IdLayer`]
//! gives each traced span exactly that, a [`SpanContext`] in its
//! extensions, and nothing more.
//!
//! [`set_parent`] and [`context_of`] work with whichever layer is
//! installed, so the rest of the workspace never asks which.

use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracing::span::{Attributes, Id};
use tracing::{Dispatch, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context as LayerContext, Layer};
use tracing_subscriber::registry::{Extensions, LookupSpan};

use crate::hop::Untraced;

/// The ids of one traced span, kept in its extensions.
#[derive(Debug, Clone)]
struct Ids(SpanContext);

/// Gives every span it sees ids: its parent's trace id and a new span id,
/// or a new trace when it has no traced parent.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdLayer;

impl<S> Layer<S> for IdLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let parent = if let Some(parent) = attrs.parent() {
            ctx.span(parent)
        } else if attrs.is_contextual() {
            ctx.lookup_current()
        } else {
            None
        };
        // The nearest traced ancestor: a span this layer's filter left out
        // (a DEBUG span) passes its parent's trace on.
        let inherited = parent.and_then(|p| p.scope().find_map(|s| ids_in(&s.extensions())));
        let ids = match inherited {
            Some(p) => SpanContext::new(
                p.trace_id(),
                new_span_id(),
                p.trace_flags(),
                false,
                p.trace_state().clone(),
            ),
            None => root(new_span_id()),
        };
        span.extensions_mut().insert(Ids(ids));
    }
}

fn new_span_id() -> SpanId {
    RandomIdGenerator::default().new_span_id()
}

fn new_trace_id() -> TraceId {
    RandomIdGenerator::default().new_trace_id()
}

/// A span that starts a trace: a new trace id, sampled.
fn root(span_id: SpanId) -> SpanContext {
    SpanContext::new(
        new_trace_id(),
        span_id,
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    )
}

/// `span_id` as a child of the span `cx` carries, as the SDK's parent-based
/// sampler would decide it: the parent's trace and sampling, or a new
/// sampled trace; never sampled under [`crate::untraced`].
fn child_of(cx: &Context, span_id: SpanId) -> SpanContext {
    let parent = cx.span().span_context().clone();
    let mut ids = if parent.is_valid() {
        SpanContext::new(
            parent.trace_id(),
            span_id,
            parent.trace_flags(),
            false,
            parent.trace_state().clone(),
        )
    } else {
        root(span_id)
    };
    if cx.get::<Untraced>().is_some() {
        ids = SpanContext::new(
            ids.trace_id(),
            span_id,
            ids.trace_flags().with_sampled(false),
            false,
            ids.trace_state().clone(),
        );
    }
    ids
}

/// The ids [`IdLayer`] keeps in a span's extensions, if it gave it any.
pub(crate) fn ids_in(ext: &Extensions<'_>) -> Option<SpanContext> {
    ext.get::<Ids>().map(|i| i.0.clone())
}

/// The ids [`IdLayer`] gave the span `id`, if that layer is installed.
pub(crate) fn ids_of(id: &Id, dispatch: &Dispatch) -> Option<SpanContext> {
    let registry = dispatch.downcast_ref::<Registry>()?;
    let span = registry.span(id)?;
    ids_in(&span.extensions())
}

/// Makes `span` (not yet entered) a child of the span `cx` carries, or the
/// root of a new trace when it carries none.
pub fn set_parent(span: &tracing::Span, cx: Context) {
    let mut done = false;
    span.with_subscriber(|(id, dispatch)| {
        let Some(registry) = dispatch.downcast_ref::<Registry>() else {
            return;
        };
        let Some(data) = registry.span(id) else {
            return;
        };
        let mut ext = data.extensions_mut();
        if let Some(ids) = ext.get_mut::<Ids>() {
            ids.0 = child_of(&cx, ids.0.span_id());
            done = true;
        }
    });
    if !done {
        // Exporting: the OpenTelemetry layer owns the span's context.
        let _ = OpenTelemetrySpanExt::set_parent(span, cx);
    }
}

/// The context `span` gives its children and its downstream calls.
pub(crate) fn context_of(span: &tracing::Span) -> Context {
    let mut ids = None;
    span.with_subscriber(|(id, dispatch)| ids = ids_of(id, dispatch));
    match ids {
        Some(sc) => Context::new().with_remote_span_context(sc),
        None => OpenTelemetrySpanExt::context(span),
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::propagation::{extract, traceparent};

    fn with_ids<T>(f: impl FnOnce() -> T) -> T {
        let subscriber = tracing_subscriber::registry().with(IdLayer);
        tracing::subscriber::with_default(subscriber, f)
    }

    #[test]
    fn children_share_the_trace_and_roots_start_their_own() {
        with_ids(|| {
            let parent = tracing::info_span!("parent");
            let child = parent.in_scope(|| tracing::info_span!("child"));
            let other = tracing::info_span!(parent: None, "other");
            let (p, c, o) = (
                context_of(&parent).span().span_context().clone(),
                context_of(&child).span().span_context().clone(),
                context_of(&other).span().span_context().clone(),
            );
            assert!(p.is_valid() && c.is_valid() && o.is_valid());
            assert_eq!(c.trace_id(), p.trace_id());
            assert_ne!(c.span_id(), p.span_id());
            assert_ne!(o.trace_id(), p.trace_id());
            assert!(p.is_sampled());
        });
    }

    #[test]
    fn a_remote_parent_is_joined_and_passed_on() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        with_ids(|| {
            let span = tracing::info_span!(parent: None, "server");
            set_parent(&span, extract(&headers));
            let tp = traceparent(&span).unwrap();
            assert!(
                tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "{tp}"
            );
            assert!(
                !tp.contains("00f067aa0ba902b7"),
                "a span id of its own: {tp}"
            );
            assert!(tp.ends_with("-01"), "sampled as its parent: {tp}");
            let child = span.in_scope(|| tracing::info_span!("call"));
            let child_tp = traceparent(&child).unwrap();
            assert!(child_tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        });
    }

    #[test]
    fn untraced_work_is_passed_on_as_not_sampled() {
        with_ids(|| {
            let span = tracing::info_span!(parent: None, "probe");
            set_parent(&span, crate::untraced(Context::new()));
            let tp = traceparent(&span).unwrap();
            assert!(tp.ends_with("-00"), "{tp}");
        });
    }

    #[test]
    fn no_opentelemetry_span_is_built() {
        with_ids(|| {
            let span = tracing::info_span!("quiet");
            span.with_subscriber(|(id, dispatch)| {
                assert!(tracing_opentelemetry::get_otel_context(id, dispatch).is_none());
                assert!(ids_of(id, dispatch).is_some());
            });
        });
    }
}
