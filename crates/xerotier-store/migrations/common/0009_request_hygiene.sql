-- Request hygiene (issue 10). `audit_log.request_id` is the router's own id for the request
-- (`req_…`, unique, never taken from the client); what a client sent as `X-Request-ID`, when it
-- is a valid label, is kept apart as `correlation_id`, so no client can make a record carry
-- another request's id. Records written before this migration keep what they had.
ALTER TABLE audit_log ADD COLUMN correlation_id TEXT;
CREATE INDEX audit_log_request ON audit_log (request_id);
CREATE INDEX audit_log_correlation ON audit_log (correlation_id);

-- An execution key lists only the invocations it created.
CREATE INDEX invocations_created_by ON invocations (created_by, id);
