-- Federation transactions received (PUT /_matrix/federation/v1/send/{txnId}): the answer
-- we gave, so that a retried transaction gets the same answer without being processed
-- again. Rows older than a day are pruned.
CREATE TABLE received_transactions (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response_json TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX received_transactions_ts ON received_transactions (received_ts);
