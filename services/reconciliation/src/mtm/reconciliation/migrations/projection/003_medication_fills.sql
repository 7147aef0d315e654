-- Each list's entries and their pharmacy fills as rows beside the list, instead of inside one document: a fill is
-- a row (and, for a medication not on the list yet, an entry), not a rewrite of the patient's whole list. An entry
-- is named by its match key (ingredients, joined by U+001F) and its slot: the nth entry of the list with that key,
-- from 0, which is the one fills join. Each entry keeps its latest 24 fills, as the document did.

CREATE TABLE medication_list_entries (
    patient_id text    NOT NULL,
    entry_key  text    NOT NULL,
    entry_slot integer NOT NULL,
    entry      json    NOT NULL, -- the entry without its fills
    PRIMARY KEY (patient_id, entry_key, entry_slot)
);

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

-- A list written before these tables keeps its entries and fills in its document until the next event that
-- changes it moves them here; the document of a list written since is NULL.
ALTER TABLE medication_lists ALTER COLUMN medication_list DROP NOT NULL;
