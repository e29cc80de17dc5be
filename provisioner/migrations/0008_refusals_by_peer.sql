-- Refused calls are counted per peer on every refusal (the cap on how many are recorded), and
-- pruned by age: both need an index.
CREATE INDEX auth_refusals_by_peer ON auth_refusals (peer, at_ms);
CREATE INDEX auth_refusals_by_time ON auth_refusals (at_ms);
