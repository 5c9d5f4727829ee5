DROP TABLE IF EXISTS cas_uri_map;
