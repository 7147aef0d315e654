-- The practitioner directory kept in the database (next to the one loaded from MTM_NOTIFY_DIRECTORY_FILE): which
-- channels a practitioner is reached on; NULL keeps the defaults (webhook and email when known, and the inbox).

ALTER TABLE recipient_endpoints ADD COLUMN channels text[];
