-- Sharded analysts (`analyst_shards`): the campaign pass puts sources in campaigns, but each
-- source's state belongs to the shard analyst that holds its shard. The pass appends each
-- assignment here, in the transaction that writes its campaigns; every shard applies those
-- of its sources in `seq` order and commits how far it has with its profiles (`state` key
-- `campaign_moves_cursor.K`). The pass deletes what every shard has applied.
CREATE TABLE campaign_moves (
    seq         BIGSERIAL PRIMARY KEY,
    ip          TEXT   NOT NULL,
    campaign_id BIGINT NOT NULL
);
