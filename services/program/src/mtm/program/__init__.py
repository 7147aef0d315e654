"""mtm program service: the MTM program's data (targeting, enrolment, adherence, reports)."""
