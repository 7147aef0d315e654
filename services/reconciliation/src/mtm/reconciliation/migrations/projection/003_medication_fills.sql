-- Pharmacy fills of each medication list entry, beside the list instead of inside its document: a refill of a
-- medication already on the list is one row, not a rewrite of the patient's whole list. An entry is named by its
-- match key (ingredients, joined by U+001F) and its slot: the nth entry of the list with that key, from 0, which
-- is the one fills join. Each entry keeps its latest 24 fills, as the document did.

CREATE TABLE medication_fills (
    patient_id    text             NOT NULL,
    entry_key     text             NOT NULL,
    entry_slot    integer          NOT NULL,
    dispense_id   text             NOT NULL,
    event_id      uuid             NOT NULL,
    filled_on     date             NOT NULL,
    days_supply   integer          NOT NULL,
    quantity      double precision,
    pharmacy_id   text,
    prescriber_id text,
    PRIMARY KEY (patient_id, entry_key, entry_slot, dispense_id)
);

-- The match keys of the list's entries, so a fill can tell a refill from a new medication without reading the
-- document. NULL on a list written before this table: its document still holds its fills, and the next event
-- that changes the list moves them here.
ALTER TABLE medication_lists ADD COLUMN entry_keys text[];
