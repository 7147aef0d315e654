-- An outbox row lives until the relay's next round: compressing its payload (pglz, for rows over 2 KB, which
-- most events are) cost a fifth of the Postgres CPU of a bench run for bytes deleted moments later. Rows up to
-- the page's limit now stay in the table as they are.

ALTER TABLE outbox SET (toast_tuple_target = 8160);
