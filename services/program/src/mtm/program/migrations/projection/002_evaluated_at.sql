-- When the member's last determination was made (its event's time): a member whose inputs keep arriving (a
-- pharmacy's fills) is evaluated again only once a short while has passed since, not at every look of the timer.
ALTER TABLE members ADD COLUMN evaluated_at timestamptz;
