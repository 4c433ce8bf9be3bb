-- The leader now writes the changes it decides while an append is in flight as
-- one log record, so one log_seq can hold several changes: each row also keeps
-- its position in the record, and (log_seq, log_index) is the key.
ALTER TABLE assignment_history ADD COLUMN log_index INTEGER NOT NULL DEFAULT 0;
ALTER TABLE assignment_history DROP CONSTRAINT assignment_history_pkey;
ALTER TABLE assignment_history ADD PRIMARY KEY (log_seq, log_index);
