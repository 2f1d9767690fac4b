/**
 * Database backup and recovery against real PostgreSQL 15, MariaDB and Redis servers and a real
 * restic repository: populate, back up, destroy, recover, compare; failing dumps record no
 * snapshot; missing tools and unreachable servers fail with errors naming them.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, chmod } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createRestic, type ResticDriver } from '../agent/restic/restic.ts';
import {
  backupDatabase, recoverDatabase, connectionFromAppBinding, connectionFromFlags, engineForType,
  DatabaseBackupError, DatabaseRecoveryError, DatabaseToolNotFoundError, DatabaseUnreachableError, DatabaseQueryError, DatabaseConfigError, UnsupportedDatabaseError,
  type DatabaseConnection,
} from '../agent/db/index.ts';
import { toolPath } from './support/tools.ts';
import { freePort, startMariadb, startPostgres, startRedis, type MariadbServer, type PostgresServer, type RedisServer } from './support/databases.ts';

const BASE_TAGS = ['namespace=demo', 'backup=db-backup'];
const HOST = 'host-0';

async function newRepository(): Promise<{ restic: ResticDriver; dir: string }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'stash-db-repo-'));
  const restic = createRestic({ repository: path.join(dir, 'repo'), env: { RESTIC_PASSWORD: 'repository-password' }, args: [], files: [] },
    { binary: toolPath('restic'), cacheDir: path.join(dir, 'cache') });
  await restic.init();
  return { restic, dir };
}

/** A dump tool that writes part of the real tool's output, then fails like a crashed dump. */
async function truncatingDump(dir: string, realTool: string): Promise<string> {
  const script = path.join(dir, `broken-${path.basename(realTool)}`);
  await writeFile(script, `#!/bin/sh\n"${realTool}" "$@" | head -c 2000\necho "simulated crash halfway through the dump" >&2\nexit 3\n`);
  await chmod(script, 0o755);
  return script;
}

/**
 * The real restic, except that `restic dump` stops after `bytes` bytes and, 2 s later (time for the
 * restore tool to act on them), exits 1 like a lost connection to the repository.
 */
async function resticWithBrokenDump(repo: { dir: string }, bytes: number): Promise<ResticDriver> {
  const script = path.join(repo.dir, 'restic-broken-dump');
  await writeFile(script, `#!/bin/bash\nfor a in "$@"; do if [ "$a" = dump ]; then "${toolPath('restic')}" "$@" | head -c ${bytes}; sleep 2; echo "simulated network failure" >&2; exit 1; fi; done\nexec "${toolPath('restic')}" "$@"\n`);
  await chmod(script, 0o755);
  return createRestic({ repository: path.join(repo.dir, 'repo'), env: { RESTIC_PASSWORD: 'repository-password' }, args: [], files: [] },
    { binary: script, cacheDir: path.join(repo.dir, 'cache') });
}

/** Direct child processes of this test process whose command matches `pattern`. */
async function childProcesses(pattern: RegExp): Promise<string[]> {
  const { execFileSync } = await import('node:child_process');
  const out = execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(process.pid)], { encoding: 'utf8' }).trim();
  return out.split('\n').filter((l) => pattern.test(l));
}

function assertNoSecret(err: unknown, secret: string): true {
  assert.ok(err instanceof Error);
  assert.ok(!err.message.includes(secret), `the error message leaks the password: ${err.message}`);
  return true;
}

describe('PostgreSQL', () => {
  let pg: PostgresServer;
  let repo: { restic: ResticDriver; dir: string };
  let conn: DatabaseConnection;
  const snapshotOfContent = async () => ({
    shop: await pg.psql("SELECT string_agg(id || ':' || name || ':' || price, ',' ORDER BY id) FROM items; SELECT count(*) FROM orders; SELECT shop_total();", 'shop'),
    analytics: await pg.psql('SELECT sum(v), count(*) FROM events;', 'analytics'),
    roles: await pg.psql("SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname IN ('app', 'reader') ORDER BY 1;"),
    owner: await pg.psql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'shop';"),
  });

  before(async () => {
    [pg, repo] = await Promise.all([startPostgres(), newRepository()]);
    conn = { engine: 'postgres', host: pg.host, port: pg.port, user: pg.user, password: pg.password, databases: [] };
    await pg.psql("CREATE ROLE app LOGIN PASSWORD 'app-pass'; CREATE ROLE reader; CREATE DATABASE shop OWNER app; CREATE DATABASE analytics;");
    await pg.psql(`CREATE TABLE items (id int PRIMARY KEY, name text, price numeric);
      INSERT INTO items SELECT g, 'item ' || g || ' ''quoted'' ü', g * 1.5 FROM generate_series(1, 500) g;
      CREATE TABLE orders (id serial PRIMARY KEY, item int REFERENCES items(id), at timestamptz DEFAULT now());
      INSERT INTO orders (item) SELECT (g % 500) + 1 FROM generate_series(1, 2000) g;
      CREATE FUNCTION shop_total() RETURNS numeric LANGUAGE sql AS 'SELECT sum(price) FROM items';
      ALTER TABLE items OWNER TO app; GRANT SELECT ON items TO reader;`, 'shop');
    await pg.psql('CREATE TABLE events (v bigint); INSERT INTO events SELECT g FROM generate_series(1, 10000) g;', 'analytics');
  });
  after(async () => {
    await pg?.stop();
    if (repo) await rm(repo.dir, { recursive: true, force: true });
  });

  test('all databases with roles: back up, drop everything, recover, identical', async () => {
    const before = await snapshotOfContent();
    const result = await backupDatabase(repo.restic, conn, { host: HOST, tags: BASE_TAGS });
    assert.equal(result.snapshots.length, 1);
    assert.deepEqual([...(result.snapshots[0]?.databases ?? [])].sort(), ['analytics', 'postgres', 'shop']);
    const listed = await repo.restic.snapshots({ tags: ['stash.engine=postgres'] });
    assert.equal(listed.length, 1);
    assert.deepEqual(listed[0]?.paths, ['/postgres.sql']);
    assert.ok(listed[0]?.tags.includes('stash.database=all'));

    await pg.psql('DROP DATABASE shop; DROP DATABASE analytics; DROP ROLE app; DROP ROLE reader;');
    assert.equal(await pg.psql("SELECT count(*) FROM pg_database WHERE datname IN ('shop', 'analytics');"), '0\n');

    const recovered = await recoverDatabase(repo.restic, conn, { tags: BASE_TAGS, host: HOST });
    assert.equal(recovered.restored.length, 1);
    assert.equal(recovered.verified['shop'], 2);
    assert.equal(recovered.verified['analytics'], 1);
    assert.deepEqual(await snapshotOfContent(), before);
    assert.equal(await pg.psql("SELECT has_table_privilege('reader', 'items', 'SELECT');", 'shop'), 't\n');
  });

  test('recovering all databases over the existing ones replaces their content', async () => {
    const before = await snapshotOfContent();
    await pg.psql('DELETE FROM orders; UPDATE items SET price = 0;', 'shop');
    await recoverDatabase(repo.restic, conn, { tags: BASE_TAGS });
    assert.deepEqual(await snapshotOfContent(), before);
  });

  test('named databases: one snapshot per database, each recoverable alone', async () => {
    const named = { ...conn, databases: ['shop', 'analytics'] };
    const result = await backupDatabase(repo.restic, named, { host: HOST, tags: BASE_TAGS });
    assert.deepEqual(result.snapshots.map((s) => s.database), ['shop', 'analytics']);
    const perDb = await repo.restic.snapshots({ tags: ['stash.database=shop'] });
    assert.equal(perDb.length, 1);
    const before = await snapshotOfContent();

    await pg.psql('DELETE FROM orders;', 'shop');
    await pg.psql('DROP DATABASE analytics;');
    const shopOnly = await recoverDatabase(repo.restic, { ...conn, databases: ['shop'] }, { tags: BASE_TAGS });
    assert.deepEqual(shopOnly.restored.map((r) => r.database), ['shop']);
    assert.equal(await pg.psql("SELECT count(*) FROM pg_database WHERE datname = 'analytics';"), '0\n', 'recovering shop must not touch analytics');
    assert.equal((await snapshotOfContent().catch(() => undefined)), undefined);
    const again = await recoverDatabase(repo.restic, { ...conn, databases: ['analytics'] }, { tags: BASE_TAGS });
    assert.equal(again.verified['analytics'], 1);
    assert.deepEqual(await snapshotOfContent(), before);
  });

  test('a named database that does not exist fails before any snapshot', async () => {
    const count = (await repo.restic.snapshots()).length;
    await assert.rejects(backupDatabase(repo.restic, { ...conn, databases: ['nosuchdb'] }, { host: HOST, tags: BASE_TAGS }),
      (err: Error) => err instanceof DatabaseBackupError && /nosuchdb/.test(err.message) && /Backup's args/.test(err.message));
    assert.equal((await repo.restic.snapshots()).length, count);
  });

  test('a dump that fails halfway records no snapshot', async () => {
    const count = (await repo.restic.snapshots()).length;
    const broken = await truncatingDump(repo.dir, '/usr/bin/pg_dumpall');
    await assert.rejects(backupDatabase(repo.restic, conn, { host: HOST, tags: BASE_TAGS, tools: { dumpAll: broken } }),
      (err: Error) => err instanceof DatabaseBackupError && /no snapshot/.test(err.message) && assertNoSecret(err, pg.password));
    assert.equal((await repo.restic.snapshots()).length, count, 'restic must not record a snapshot of a failed dump');
  });

  test('a missing dump binary fails with its name and the fix', async () => {
    await assert.rejects(backupDatabase(repo.restic, conn, { host: HOST, tags: BASE_TAGS, tools: { dumpAll: 'pg_dumpall-not-installed' } }),
      (err: Error) => err instanceof DatabaseToolNotFoundError && /pg_dumpall-not-installed/.test(err.message) && /install/.test(err.message));
  });

  test('an unreachable server fails naming host:port, never the password', async () => {
    const port = await freePort();
    await assert.rejects(backupDatabase(repo.restic, { ...conn, port }, { host: HOST, tags: BASE_TAGS }),
      (err: Error) => err instanceof DatabaseUnreachableError && err.message.includes(`127.0.0.1:${port}`) && assertNoSecret(err, pg.password));
    await assert.rejects(recoverDatabase(repo.restic, { ...conn, port }, { tags: BASE_TAGS }),
      (err: Error) => err instanceof DatabaseUnreachableError && err.message.includes(`127.0.0.1:${port}`));
  });

  test('a wrong password fails at login, without echoing either password', async () => {
    const wrong = 'not-the-password-123';
    await assert.rejects(backupDatabase(repo.restic, { ...conn, password: wrong }, { host: HOST, tags: BASE_TAGS }),
      (err: Error) => err instanceof DatabaseQueryError && /password authentication failed/.test(err.message) && assertNoSecret(err, wrong) && assertNoSecret(err, pg.password));
  });

  test('memory stays flat: a 100 MB database streams through without buffering', async () => {
    await pg.psql('CREATE DATABASE big;');
    await pg.psql("CREATE TABLE blob (id int, data text); INSERT INTO blob SELECT g, string_agg(md5(random()::text || g || x), '') FROM generate_series(1, 25000) g, generate_series(1, 100) x GROUP BY g;", 'big');
    const size = Number(await pg.psql("SELECT pg_database_size('big');"));
    assert.ok(size > 70e6, `the test database should be large, it is ${size} bytes`);
    const bigConn = { ...conn, databases: ['big'] };
    const result = await backupDatabase(repo.restic, bigConn, { host: HOST, tags: BASE_TAGS });
    assert.ok((result.snapshots[0]?.summary.totalBytesProcessed ?? 0) > 60e6);
    const checksum = await pg.psql("SELECT md5(string_agg(data, '' ORDER BY id)) FROM blob;", 'big');

    // The real pg_dump loses its server connection halfway through: no snapshot.
    const count = (await repo.restic.snapshots()).length;
    const killer = (async () => {
      for (let i = 0; i < 300; i++) {
        const killed = await pg.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = 'big' AND application_name = 'stash' AND query LIKE 'COPY%';");
        if (killed.trim() !== '0') return true;
        await new Promise((r) => setTimeout(r, 20));
      }
      return false;
    })();
    await assert.rejects(backupDatabase(repo.restic, bigConn, { host: HOST, tags: BASE_TAGS }),
      (err: Error) => err instanceof DatabaseBackupError && /no snapshot/.test(err.message));
    assert.ok(await killer, 'the dump\'s COPY was terminated mid-stream');
    assert.equal((await repo.restic.snapshots()).length, count, 'restic must not record the truncated dump');

    await pg.psql('DROP DATABASE big;');
    const baseline = process.memoryUsage().rss;
    let peak = baseline;
    const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 20);
    try {
      await recoverDatabase(repo.restic, bigConn, { tags: BASE_TAGS });
    } finally {
      clearInterval(sampler);
    }
    assert.equal(await pg.psql("SELECT md5(string_agg(data, '' ORDER BY id)) FROM blob;", 'big'), checksum);
    assert.ok(peak - baseline < 40e6, `the agent grew by ${((peak - baseline) / 1e6).toFixed(1)} MB while streaming a ${(size / 1e6).toFixed(0)} MB database`);
  });

  test('a restore tool that fails fails the recovery, and restic dump is stopped', async () => {
    const failing = path.join(repo.dir, 'failing-psql');
    await writeFile(failing, '#!/bin/sh\nhead -c 100000 >/dev/null\necho "ERROR: simulated restore failure" >&2\nexit 3\n');
    await chmod(failing, 0o755);
    const started = Date.now();
    await assert.rejects(recoverDatabase(repo.restic, { ...conn, databases: ['big'] }, { tags: BASE_TAGS, tools: { restore: failing } }),
      (err: Error) => err instanceof DatabaseRecoveryError && /simulated restore failure/.test(err.message) && /exited with code 3/.test(err.message) && assertNoSecret(err, pg.password));
    assert.ok(Date.now() - started < 30_000, 'the recovery must fail promptly, not wait for the whole snapshot');
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(await childProcesses(/restic/), [], 'no restic process may be left behind');
  });

  test('a restic dump that breaks off fails the recovery; psql never sees the end of the data', async () => {
    const broken = await resticWithBrokenDump(repo, 50_000);
    await assert.rejects(recoverDatabase(broken, { ...conn, databases: ['big'] }, { tags: BASE_TAGS }),
      (err: Error) => err instanceof DatabaseRecoveryError && /restic dump failed/.test(err.message) && /simulated network failure|exit/.test(err.message));
    assert.deepEqual(await childProcesses(/psql|restic/), [], 'psql and restic must be gone');
    // The stream broke inside COPY (50 kB in, after DROP/CREATE DATABASE ran): had psql seen
    // end-of-input it would have committed the rows read so far; killed, it commits none.
    assert.equal(await pg.psql('SELECT count(*) FROM blob;', 'big'), '0\n', 'psql must not commit a partial COPY');
  });
});

describe('MariaDB', () => {
  let db: MariadbServer;
  let repo: { restic: ResticDriver; dir: string };
  let conn: DatabaseConnection;
  const content = async () => ({
    rows: await db.sql("SELECT GROUP_CONCAT(CONCAT(id, ':', name, ':', qty) ORDER BY id) FROM stock; SELECT COUNT(*), SUM(amount) FROM audit;", 'store'),
    routine: await db.sql("SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'store';"),
    trigger: await db.sql("SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'store';"),
    event: await db.sql("SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = 'store';"),
    logs: await db.sql('SELECT COUNT(*), MAX(msg) FROM entries;', 'logs'),
    user: await db.sql("SELECT CONCAT(User, '@', Host) FROM mysql.user WHERE User = 'shopper';"),
  });

  before(async () => {
    [db, repo] = await Promise.all([startMariadb(), newRepository()]);
    conn = { engine: 'mariadb', host: db.host, port: db.port, user: db.user, password: db.password, databases: [] };
    await db.sql(`CREATE DATABASE store; CREATE DATABASE logs; CREATE USER shopper@'%' IDENTIFIED BY 'shopper-pass'; GRANT SELECT ON store.* TO shopper@'%';
      USE store;
      CREATE TABLE stock (id INT PRIMARY KEY, name VARCHAR(100), qty INT) ENGINE=InnoDB;
      CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, amount INT) ENGINE=InnoDB;
      CREATE TRIGGER stock_audit AFTER UPDATE ON stock FOR EACH ROW INSERT INTO audit (amount) VALUES (NEW.qty - OLD.qty);
      CREATE PROCEDURE restock(IN n INT) UPDATE stock SET qty = qty + n;
      CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DISABLE DO CALL restock(1);
      INSERT INTO stock SELECT seq, CONCAT('thing ', seq, ' "q" é'), seq FROM seq_1_to_300;
      CALL restock(5);
      USE logs; CREATE TABLE entries (id INT PRIMARY KEY, msg TEXT); INSERT INTO entries SELECT seq, CONCAT('line ', seq) FROM seq_1_to_1000;`);
  });
  after(async () => {
    await db?.stop();
    if (repo) await rm(repo.dir, { recursive: true, force: true });
  });

  test('all databases with routines, triggers, events and users: back up, drop, recover, identical', async () => {
    const before = await content();
    assert.match(before.rows, /^1:thing 1/);
    const result = await backupDatabase(repo.restic, conn, { host: HOST, tags: BASE_TAGS });
    assert.equal(result.snapshots.length, 1);
    assert.ok(result.snapshots[0]?.databases.includes('store') && result.snapshots[0].databases.includes('mysql'));

    await db.sql("DROP DATABASE store; DROP DATABASE logs; DROP USER shopper@'%';");
    const recovered = await recoverDatabase(repo.restic, conn, { tags: BASE_TAGS });
    assert.equal(recovered.verified['store'], 2);
    assert.equal(recovered.verified['logs'], 1);
    assert.deepEqual(await content(), before);
    // The trigger works after recovery.
    await db.sql('CALL restock(1);', 'store');
    assert.equal(await db.sql('SELECT COUNT(*) FROM audit;', 'store'), '600\n');
  });

  test('named databases: one consistent snapshot, recovered by name', async () => {
    const result = await backupDatabase(repo.restic, { ...conn, databases: ['logs'] }, { host: HOST, tags: BASE_TAGS });
    assert.deepEqual(result.snapshots[0]?.databases, ['logs']);
    const before = await db.sql('SELECT COUNT(*), MAX(msg) FROM entries;', 'logs');
    await db.sql('DROP DATABASE logs;');
    const recovered = await recoverDatabase(repo.restic, { ...conn, databases: ['logs'] }, { tags: BASE_TAGS });
    assert.equal(recovered.restored.length, 1);
    assert.deepEqual(Object.keys(recovered.verified), ['logs']);
    assert.equal(await db.sql('SELECT COUNT(*), MAX(msg) FROM entries;', 'logs'), before);
  });

  test('a dump that fails halfway records no snapshot; a missing tool and a dead port are named', async () => {
    const count = (await repo.restic.snapshots()).length;
    const broken = await truncatingDump(repo.dir, '/usr/bin/mariadb-dump');
    await assert.rejects(backupDatabase(repo.restic, conn, { host: HOST, tags: BASE_TAGS, tools: { dump: broken } }),
      (err: Error) => err instanceof DatabaseBackupError && assertNoSecret(err, db.password));
    assert.equal((await repo.restic.snapshots()).length, count);
    await assert.rejects(backupDatabase(repo.restic, conn, { host: HOST, tags: BASE_TAGS, tools: { dump: '/nonexistent/mariadb-dump' } }),
      (err: Error) => err instanceof DatabaseToolNotFoundError && err.message.includes('/nonexistent/mariadb-dump'));
    const port = await freePort();
    await assert.rejects(backupDatabase(repo.restic, { ...conn, port }, { host: HOST, tags: BASE_TAGS }),
      (err: Error) => err instanceof DatabaseUnreachableError && err.message.includes(`127.0.0.1:${port}`) && assertNoSecret(err, db.password));
  });
});

describe('Redis', () => {
  let redis: RedisServer;
  let repo: { restic: ResticDriver; dir: string };
  let conn: DatabaseConnection;
  const content = async () => ({
    string: await redis.cli('GET', 'greeting'),
    binary: await redis.cli('GET', 'bin'),
    hash: await redis.cli('HGETALL', 'user:1'),
    list: await redis.cli('LRANGE', 'queue', '0', '-1'),
    set: (await redis.cli('SMEMBERS', 'tags')).split('\n').map((l) => l.replace(/^\d+\) /, '')).sort().join(','),
    zset: await redis.cli('ZRANGE', 'scores', '0', '-1', 'WITHSCORES'),
    stream: await redis.cli('XRANGE', 'events', '-', '+'),
    ttl: Number(/\d+/.exec(await redis.cli('TTL', 'session'))?.[0]) > 3000,
    many: await redis.cli('DBSIZE'),
    db1: await redis.cli('-n', '1', 'GET', 'other-db'),
    types: await redis.cli('TYPE', 'scores'),
  });

  before(async () => {
    [redis, repo] = await Promise.all([startRedis(), newRepository()]);
    conn = { engine: 'redis', host: redis.host, port: redis.port, password: redis.password, databases: [] };
    await redis.cli('SET', 'greeting', 'hello "world" ü');
    await redis.cli('SET', 'bin', 'b\x01\x7f\t');
    await redis.cli('HSET', 'user:1', 'name', 'ada', 'age', '36');
    await redis.cli('RPUSH', 'queue', 'a', 'b', 'c', 'd');
    await redis.cli('SADD', 'tags', 'x', 'y', 'z');
    await redis.cli('ZADD', 'scores', '1', 'one', '2.5', 'two', '3', 'three');
    await redis.cli('XADD', 'events', '1-1', 'kind', 'created');
    await redis.cli('XADD', 'events', '2-1', 'kind', 'paid');
    await redis.cli('SET', 'session', 'token', 'EX', '3600');
    await redis.cli('EVAL', "for i=1,2000 do redis.call('SET', 'k:'..i, i) end", '0');
    await redis.cli('-n', '1', 'SET', 'other-db', 'in db 1');
  });
  after(async () => {
    await redis?.stop();
    if (repo) await rm(repo.dir, { recursive: true, force: true });
  });

  test('every key type, TTLs and logical databases: back up an RDB, flush, recover into the running server', async () => {
    const before = await content();
    assert.equal(before.many.trim(), '(integer) 2008');
    const result = await backupDatabase(repo.restic, conn, { host: HOST, tags: BASE_TAGS });
    assert.equal(result.snapshots.length, 1);
    const listed = await repo.restic.snapshots({ tags: ['stash.engine=redis'] });
    assert.deepEqual(listed[0]?.paths, ['/redis.rdb']);

    await redis.cli('FLUSHALL');
    await redis.cli('SET', 'written-after-backup', '1');
    const recovered = await recoverDatabase(repo.restic, conn, { tags: BASE_TAGS, redis: { listenHost: '127.0.0.1', advertiseHost: '127.0.0.1', timeoutMs: 60_000 } });
    assert.deepEqual(recovered.verified, { db0: 2008, db1: 1 });
    assert.deepEqual(await content(), before);
    assert.equal((await redis.cli('EXISTS', 'written-after-backup')).trim(), '(integer) 0');
    const role = await redis.cli('ROLE');
    assert.match(role, /master/, 'the server must be a master again after the recovery');
    await redis.cli('SET', 'writable-again', '1');
  });

  test('a broken snapshot stream leaves the server\'s data untouched and the server a master', async () => {
    await redis.cli('SET', 'kept', 'yes');
    const dbsize = await redis.cli('DBSIZE');
    const broken = await resticWithBrokenDump(repo, 1000);
    await assert.rejects(recoverDatabase(broken, conn, { tags: BASE_TAGS, redis: { listenHost: '127.0.0.1', advertiseHost: '127.0.0.1', timeoutMs: 60_000 } }),
      (err: Error) => err instanceof DatabaseRecoveryError && assertNoSecret(err, redis.password));
    assert.equal(await redis.cli('GET', 'kept'), '"yes"\n');
    assert.equal(await redis.cli('DBSIZE'), dbsize);
    assert.match(await redis.cli('ROLE'), /master/);
  });

  test('an RDB from a newer Redis, or something else, is refused before the server is touched', async () => {
    const dbsize = await redis.cli('DBSIZE');
    const foreign = async (script: string) => (await repo.restic.backupCommand(['sh', '-c', script],
      { host: HOST, tags: [...BASE_TAGS, 'stash.engine=redis', 'stash.database=all'], filename: 'redis.rdb' })).snapshotId;
    const newer = await foreign('printf REDIS0099; head -c 300 /dev/zero');
    await assert.rejects(recoverDatabase(repo.restic, conn, { snapshot: newer, redis: { listenHost: '127.0.0.1', advertiseHost: '127.0.0.1' } }),
      (err: Error) => err instanceof DatabaseRecoveryError && /RDB format 99/.test(err.message) && /7\.0\./.test(err.message));
    const sql = await foreign('echo "SELECT 1;"');
    await assert.rejects(recoverDatabase(repo.restic, conn, { snapshot: sql, redis: { listenHost: '127.0.0.1', advertiseHost: '127.0.0.1' } }),
      (err: Error) => err instanceof DatabaseRecoveryError && /does not hold a Redis RDB/.test(err.message));
    assert.equal(await redis.cli('DBSIZE'), dbsize);
    assert.match(await redis.cli('ROLE'), /master/);
  });

  test('named databases are refused; a failed dump records no snapshot; a dead port is named', async () => {
    await assert.rejects(backupDatabase(repo.restic, { ...conn, databases: ['0'] }, { host: HOST, tags: BASE_TAGS }),
      (err: Error) => err instanceof DatabaseConfigError && /every logical database/.test(err.message));
    const count = (await repo.restic.snapshots()).length;
    const broken = await truncatingDump(repo.dir, '/usr/bin/redis-cli');
    await assert.rejects(backupDatabase(repo.restic, conn, { host: HOST, tags: BASE_TAGS, tools: { dump: broken } }),
      (err: Error) => err instanceof DatabaseBackupError && assertNoSecret(err, redis.password));
    assert.equal((await repo.restic.snapshots()).length, count);
    const port = await freePort();
    await assert.rejects(recoverDatabase(repo.restic, { ...conn, port }, { tags: BASE_TAGS }),
      (err: Error) => err instanceof DatabaseUnreachableError && err.message.includes(`127.0.0.1:${port}`) && assertNoSecret(err, redis.password));
  });
});

describe('connections from AppBindings and flags', () => {
  const meta = { name: 'quick-postgres', namespace: 'demo' };
  const b64 = (s: string) => Buffer.from(s).toString('base64');

  test('service + Secret keys per engine', () => {
    const pg = connectionFromAppBinding({ metadata: meta, spec: { type: 'kubedb.com/postgres', clientConfig: { service: { name: 'quick-postgres', port: 5432, scheme: 'postgresql' } }, secret: { name: 'auth' } } },
      { data: { POSTGRES_USER: b64('admin'), POSTGRES_PASSWORD: b64('s3cret') } }, ['shop']);
    assert.deepEqual(pg, { engine: 'postgres', host: 'quick-postgres.demo.svc', port: 5432, user: 'admin', password: 's3cret', databases: ['shop'] });
    const my = connectionFromAppBinding({ metadata: meta, spec: { type: 'kubedb.com/mysql', clientConfig: { url: 'mysql://db.example:3307' }, secret: { name: 'auth' } } },
      { data: { MYSQL_ROOT_USERNAME: b64('root'), MYSQL_ROOT_PASSWORD: b64('pw') } });
    assert.deepEqual(my, { engine: 'mariadb', host: 'db.example', port: 3307, user: 'root', password: 'pw', databases: [] });
    const rd = connectionFromAppBinding({ metadata: meta, spec: { type: 'redis', clientConfig: { url: 'redis://cache' }, secret: { name: 'auth' } } }, { stringData: { password: 'pw' } });
    assert.deepEqual(rd, { engine: 'redis', host: 'cache', port: 6379, user: undefined, password: 'pw', databases: [] });
  });

  test('bad bindings fail with the field and the fix', () => {
    assert.throws(() => engineForType('kubedb.com/mongodb'), (err: Error) => err instanceof UnsupportedDatabaseError && /kubedb\.com\/postgres/.test(err.message));
    assert.throws(() => connectionFromAppBinding({ metadata: meta, spec: { type: 'postgres', clientConfig: { url: 'postgres://u:hunter2@h:5432' } } }, undefined),
      (err: Error) => err instanceof DatabaseConfigError && /password/.test(err.message) && !err.message.includes('hunter2'));
    assert.throws(() => connectionFromAppBinding({ metadata: meta, spec: { type: 'postgres', clientConfig: { service: { name: 'pg', port: 5432 } }, secret: { name: 'auth' } } }, { data: { other: 'eA==' } }),
      (err: Error) => err instanceof DatabaseConfigError && /POSTGRES_PASSWORD/.test(err.message));
  });

  test('standalone flags take the password from the environment', () => {
    const conn = connectionFromFlags({ type: 'mariadb', host: '10.0.0.5', databases: ['a'] }, { DB_PASSWORD: 'envpw' });
    assert.deepEqual(conn, { engine: 'mariadb', host: '10.0.0.5', port: 3306, user: 'root', password: 'envpw', databases: ['a'] });
    assert.throws(() => connectionFromFlags({ type: 'postgres', host: 'h', port: 70000 }, {}), DatabaseConfigError);
  });
});
