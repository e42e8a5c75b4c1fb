//! Which service a span belongs to, and which spans are left out of export.

use crate::propagation::extract;
use http::HeaderMap;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SamplingDecision, SamplingResult, ShouldSample};

/// The service a hop's spans belong to, carried in the OpenTelemetry context
/// from the hop's first span to every span started under it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hop(pub(crate) &'static str);

/// `cx` marked as the work of `service`: spans started under it are
/// exported with `service.name` set to `service`.
pub fn in_service(cx: Context, service: &'static str) -> Context {
    cx.with_value(Hop(service))
}

/// The parent of a server span: the caller's trace from the `traceparent`
/// in `headers` (none starts a new trace), marked as `service`'s work.
pub fn server_parent(service: &'static str, headers: &HeaderMap) -> Context {
    in_service(extract(headers), service)
}

/// The parent of a span that starts a trace of its own inside `service`
/// (a relay pass, a background loop).
pub fn root_in_service(service: &'static str) -> Context {
    in_service(Context::new(), service)
}

/// Makes `span` (created with `parent: None`, not yet entered) the root of
/// a new trace whose spans are `service`'s.
pub fn begin_trace(span: &tracing::Span, service: &'static str) {
    crate::set_parent(span, root_in_service(service));
}

/// Like [`begin_trace`], but nothing under `span` is exported: for
/// background polling that would otherwise add a trace every interval.
pub fn begin_untraced(span: &tracing::Span, service: &'static str) {
    crate::set_parent(span, untraced(root_in_service(service)));
}

/// Marks a context whose spans are not exported: probe and scrape traffic
/// (`/health`, `/ready`, `/metrics`), which would otherwise bury the
/// traces of real requests. Their spans still get ids, so log lines and
/// `traceparent` work as everywhere else.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Untraced;

/// `cx` with every span started under it left out of export.
pub fn untraced(cx: Context) -> Context {
    cx.with_value(Untraced)
}

/// Follows the parent's decision (everything is sampled unless a caller
/// said otherwise in `traceparent`) and drops spans under [`untraced`].
#[derive(Debug, Clone)]
pub(crate) struct HopSampler(Sampler);

impl Default for HopSampler {
    fn default() -> Self {
        Self(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
    }
}

impl ShouldSample for HopSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: opentelemetry::trace::TraceId,
        name: &str,
        span_kind: &opentelemetry::trace::SpanKind,
        attributes: &[KeyValue],
        links: &[opentelemetry::trace::Link],
    ) -> SamplingResult {
        if let Some(cx) = parent_context
            && cx.get::<Untraced>().is_some()
        {
            return SamplingResult {
                decision: SamplingDecision::Drop,
                attributes: Vec::new(),
                trace_state: cx.span().span_context().trace_state().clone(),
            };
        }
        self.0
            .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}
