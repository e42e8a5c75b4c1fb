//! W3C `traceparent` in and out of HTTP headers and message headers.

use std::collections::HashMap;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;

pub(crate) fn propagator() -> &'static TraceContextPropagator {
    static PROPAGATOR: OnceLock<TraceContextPropagator> = OnceLock::new();
    PROPAGATOR.get_or_init(TraceContextPropagator::new)
}

pub(crate) struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

pub(crate) struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// The remote parent carried by `traceparent` in `headers`, if any.
///
/// It starts from an empty context, not the current one: a remote parent
/// must not inherit what the local task happens to carry (an untraced
/// background loop, another service's hop).
pub fn extract(headers: &HeaderMap) -> Context {
    propagator().extract_with_context(&Context::new(), &HeaderExtractor(headers))
}

/// Writes `traceparent` for `span` into `headers`.
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    propagator().inject_context(&crate::ids::context_of(span), &mut HeaderInjector(headers));
}

/// The trace context of `span` as string pairs, for carriers that are not
/// HTTP headers (AMQP message headers).
pub fn inject_map(span: &tracing::Span) -> HashMap<String, String> {
    let mut map = HashMap::new();
    propagator().inject_context(&crate::ids::context_of(span), &mut map);
    map
}

/// The remote parent carried in string pairs.
pub fn extract_map(map: &HashMap<String, String>) -> Context {
    propagator().extract_with_context(&Context::new(), map)
}

/// The `traceparent` value that identifies `span`.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let mut headers = HeaderMap::new();
    inject(span, &mut headers);
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The trace id of `span` as 32 hex digits.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = crate::ids::context_of(span);
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}
