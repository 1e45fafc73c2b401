// query.mjs runs one SQL statement in an in-memory DuckDB and prints its
// result as JSON: {"columns": [...], "rows": [{column: value, ...}, ...]}
// (BIGINT values as strings, lists as arrays, maps as [{key, value}]).
// The sample lake tests read fleetd's Parquet files back with it
// (shared/testenv.DuckDB copies it beside the node_modules that
// scripts/npm-apps.sh duckdb installs).
//
// Usage: node query.mjs "SELECT ... FROM read_parquet('DIR/**/*.parquet', hive_partitioning = true)"
import { DuckDBInstance } from '@duckdb/node-api';

const sql = process.argv[2];
if (!sql) {
  console.error('usage: node query.mjs SQL');
  process.exit(2);
}
const db = await DuckDBInstance.create(':memory:', { threads: '2' });
const conn = await db.connect();
const res = await conn.runAndReadAll(sql);
process.stdout.write(JSON.stringify({ columns: res.columnNames(), rows: res.getRowObjectsJson() }));
