// Validates a HAR file against the HAR 1.2 JSON schema (npm `har-validator`,
// which uses `har-schema`): `node validate.mjs FILE`. Prints one line on
// success; the schema's errors and exit code 1 otherwise. Run by
// tests/tests/e2e/export.rs.
import { readFileSync } from 'node:fs';
import validator from 'har-validator';

const file = process.argv[2];
if (!file) {
  console.error('usage: node validate.mjs FILE.har');
  process.exit(2);
}
const har = JSON.parse(readFileSync(file, 'utf8'));
try {
  await validator.har(har);
  console.log(`valid HAR ${har.log.version} with ${har.log.entries.length} entries`);
} catch (e) {
  console.error(JSON.stringify(e.errors ?? String(e), null, 2));
  process.exit(1);
}
