-- pgbench baseline for pgstore: one INSERT ... ON CONFLICT DO NOTHING of a
-- fresh random key per transaction (bench/pg creates the table).
\set id random(1, 1000000000000000)
INSERT INTO once_bench_pgbench (id) VALUES (:id) ON CONFLICT DO NOTHING;
