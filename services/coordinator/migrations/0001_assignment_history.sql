-- The permanent "why this node" ledger: one row per assignment change in the
-- coordinator's log. log_seq and event_id are unique, so replaying the log
-- (after a Postgres outage or a redelivery) inserts nothing twice.
CREATE TABLE assignment_history (
    log_seq          BIGINT      PRIMARY KEY,
    event_id         TEXT        NOT NULL UNIQUE,
    agent_name       TEXT        NOT NULL,
    node_id          TEXT,
    previous_node_id TEXT,
    action           TEXT        NOT NULL
        CHECK (action IN ('assigned', 'unassigned', 'orphaned', 'reassigned', 'migrated')),
    reason           TEXT        NOT NULL,
    leader_id        TEXT        NOT NULL,
    epoch            BIGINT      NOT NULL,
    at               TIMESTAMPTZ NOT NULL,
    candidates       JSONB,
    recorded_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX assignment_history_agent ON assignment_history (agent_name, log_seq DESC);
CREATE INDEX assignment_history_node ON assignment_history (node_id, log_seq DESC);
CREATE INDEX assignment_history_previous_node ON assignment_history (previous_node_id, log_seq DESC);
CREATE INDEX assignment_history_at ON assignment_history (at);
