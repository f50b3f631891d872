-- An endpoint's pending deliveries, soonest due first: the dispatcher claims endpoint by endpoint,
-- and this keeps each claim as cheap with a backlog of millions (a receiver down for a day) as without.
CREATE INDEX webhook_deliveries_due_by_endpoint ON webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE state = 'pending';
