-- The installed system's check of the driver set its image carries (`DriverReport` as JSON):
-- what was installed, package by package with the sha256 it came from, and each check's
-- outcome. Kept with the install it checked: a new install checks again.
ALTER TABLE installs ADD COLUMN drivers_ms BIGINT;
ALTER TABLE installs ADD COLUMN drivers_report TEXT;
