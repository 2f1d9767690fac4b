import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidPortError, portFromEnv } from './main.ts';

test('PORT defaults to 8080 and must be a TCP port', () => {
  assert.equal(portFromEnv({}), 8080);
  assert.equal(portFromEnv({ PORT: '0' }), 0);
  assert.equal(portFromEnv({ PORT: '9000' }), 9000);
  for (const bad of ['', 'http', '65536', '-1', '80.5']) {
    assert.throws(() => portFromEnv({ PORT: bad }), (e: unknown) => e instanceof InvalidPortError && e.message.startsWith(`PORT=${bad} is not a TCP port number`));
  }
});
