//! W3C trace context (`traceparent`) across broker → controller RPCs, so a produce's trace
//! continues into the controller that commits its object (docs/observability.md).
//!
//! The broker puts the current span's context into the request when a trace is being recorded
//! (`RemoteController::submit`); the controller makes it the parent of the span that serves
//! the request (`raft::network`). Without an OpenTelemetry layer (tracing off, the default)
//! there is no context: nothing is added to the request and the wire format is unchanged.
//!
//! Only the `traceparent` header is carried (version 00): ids and the sampled flag. Vendor
//! `tracestate` is dropped. Parsing never panics: the text comes from the network.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `traceparent` of `span`, if it belongs to a recorded OpenTelemetry trace.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span_ref = context.span();
    format(span_ref.span_context())
}

/// Makes the trace `traceparent` names the parent of `span`, which must not have been entered
/// yet. Malformed text is ignored (the span starts a trace of its own).
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    if span.is_disabled() {
        return;
    }
    if let Some(remote) = parse(traceparent) {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
}

/// `00-<trace id>-<span id>-<flags>`, or `None` for an invalid (empty) context.
fn format(context: &SpanContext) -> Option<String> {
    context
        .is_valid()
        .then(|| format!("00-{}-{}-{:02x}", context.trace_id(), context.span_id(), context.trace_flags().to_u8()))
}

/// The remote span context in a version-00 `traceparent`; `None` if malformed or all-zero ids.
pub(crate) fn parse(text: &str) -> Option<SpanContext> {
    let mut parts = text.trim().split('-');
    let (version, trace_id, span_id, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || version != "00" || trace_id.len() != 32 || span_id.len() != 16 || flags.len() != 2 {
        return None;
    }
    let lower_hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !lower_hex(trace_id) || !lower_hex(span_id) || !lower_hex(flags) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let context = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8()),
        true,
        TraceState::NONE,
    );
    context.is_valid().then_some(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_w3c_example() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = parse(text).expect("the spec's example parses");
        assert!(context.is_sampled() && context.is_remote());
        assert_eq!(format(&context).as_deref(), Some(text));
    }

    #[test]
    fn refuses_malformed_text() {
        for text in [
            "",
            "00",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902\u{e9}-01",
        ] {
            assert!(parse(text).is_none(), "{text:?} must be refused");
        }
    }

    #[test]
    fn keeps_only_the_sampled_flag() {
        let context = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff").expect("parses");
        assert_eq!(context.trace_flags(), TraceFlags::SAMPLED);
        let context = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").expect("parses");
        assert!(!context.is_sampled());
    }

    #[test]
    fn nothing_to_carry_without_an_opentelemetry_layer() {
        // No subscriber at all: the span is disabled, so no context goes on the wire.
        assert_eq!(traceparent(&tracing::info_span!("submit")), None);
        assert_eq!(traceparent(&tracing::Span::none()), None);
    }
}
