-- What the pharmacists' worklist sorts and filters by, one row per review task: a projection of ReviewTaskCreated
-- (kind, due time, alert counts by severity). Filled from the tasks already here, exactly as applying their
-- ReviewTaskCreated events gives it, so a rebuild gives these rows.

CREATE TABLE task_worklist (
    task_id             uuid        PRIMARY KEY,
    reason              text        NOT NULL,
    due                 timestamptz,
    alerts_high         integer     NOT NULL,
    alerts_moderate     integer     NOT NULL,
    alerts_low          integer     NOT NULL,
    alerts_interruptive integer     NOT NULL
);

CREATE INDEX task_worklist_due ON task_worklist (due);

INSERT INTO task_worklist
SELECT t.task_id,
       coalesce(t.created_event -> 'data' ->> 'reason', 'post-discharge-review'),
       (t.created_event -> 'data' ->> 'due')::timestamptz,
       (SELECT count(*) FROM json_array_elements(t.created_event -> 'data' -> 'alerts') a WHERE a ->> 'severity' = 'high'),
       (SELECT count(*) FROM json_array_elements(t.created_event -> 'data' -> 'alerts') a
        WHERE a ->> 'severity' = 'moderate'),
       (SELECT count(*) FROM json_array_elements(t.created_event -> 'data' -> 'alerts') a WHERE a ->> 'severity' = 'low'),
       (SELECT count(*) FROM json_array_elements(t.created_event -> 'data' -> 'alerts') a
        WHERE a ->> 'tier' = 'interruptive')
FROM review_tasks t;
