"""Contract cases for the database connectors (case_sqlite, case_postgres, case_mysql); filled in by the database connectors owner."""
