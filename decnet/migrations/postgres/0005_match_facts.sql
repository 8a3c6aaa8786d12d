-- What campaign matching reads of a keyed source's state (`[first_ns, last_ns, port_min,
-- port_max, campaign_id, [decoys]]`), written by sharded analysts with the state, so the
-- campaign pass reads a few dozen bytes per source instead of parsing kilobytes of state.
ALTER TABLE attacker_behavior ADD COLUMN match_facts TEXT;
