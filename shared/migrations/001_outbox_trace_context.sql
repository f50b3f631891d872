-- The W3C Trace Context of the request or event that queued a message (shared.trace_context): the
-- relay publishes it as the traceparent and tracestate headers, so the trace goes on in consumers.
ALTER TABLE outbox ADD COLUMN traceparent text, ADD COLUMN tracestate text;
