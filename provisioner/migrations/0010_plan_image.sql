-- The OS image a slot installs (a name in the image library); none: the SKU's default.
ALTER TABLE plan_slots ADD COLUMN image TEXT;
