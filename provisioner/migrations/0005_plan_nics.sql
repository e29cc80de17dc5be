-- The NICs a slot is cabled for: how many, at what link speed (Mb/s). Burn-in checks them.
ALTER TABLE plan_slots ADD COLUMN nics INTEGER;
ALTER TABLE plan_slots ADD COLUMN nic_mbps INTEGER;
