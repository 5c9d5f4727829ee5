-- The baseline belongs to the running system; reverting the rollout never drops it.
SELECT 1;
