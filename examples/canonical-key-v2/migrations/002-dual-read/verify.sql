SELECT COUNT(*) = (SELECT COUNT(*) FROM field_values) FROM field_values_dual;
