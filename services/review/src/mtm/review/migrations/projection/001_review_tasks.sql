-- Review tasks (FHIR Task): a projection of ReviewTaskCreated, ReviewTaskClaimed and ReviewTaskCompleted.
-- Every column comes from an event (times are the events' times), so a rebuild from the log gives these rows.

CREATE TABLE review_tasks (
    task_id           uuid        PRIMARY KEY,
    focus_event_id    uuid        NOT NULL UNIQUE,
    patient_id        text        NOT NULL,
    correlation_id    uuid        NOT NULL,
    status            text        NOT NULL CHECK (status IN ('requested', 'in-progress', 'completed')),
    priority          text        NOT NULL,
    owner             text,
    alert_count       integer     NOT NULL DEFAULT 0,
    discrepancy_count integer     NOT NULL DEFAULT 0,
    created_event     json        NOT NULL, -- ReviewTaskCreated as published (its data is the task)
    completion        json,                 -- TaskCompletion of ReviewTaskCompleted
    created_at        timestamptz NOT NULL,
    claimed_at        timestamptz,
    completed_at      timestamptz
);

CREATE INDEX review_tasks_open ON review_tasks (status, priority, created_at) WHERE status <> 'completed';
CREATE INDEX review_tasks_patient ON review_tasks (patient_id);
