-- A weekly window whose end equals its start is a whole day (24 hours), like any
-- window whose end is not after its start runs past midnight.
ALTER TABLE availability_rules DROP CONSTRAINT availability_rules_check;
