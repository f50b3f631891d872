-- The W3C Trace Context a delivery continues (shared.trace_context): the event's span (or the
-- admin's ping request's); each attempt is sent as a new child span of it, in the traceparent
-- header, with the tracestate that came along.
ALTER TABLE webhook_deliveries ADD COLUMN traceparent text, ADD COLUMN tracestate text;
