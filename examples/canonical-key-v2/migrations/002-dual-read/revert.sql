DROP VIEW IF EXISTS field_values_dual;
