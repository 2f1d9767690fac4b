// Unit tests of the pure database plans: commands, env, tags, snapshot choice and the role filter.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import * as postgres from './postgres.ts';
import * as mariadb from './mariadb.ts';
import * as redis from './redis.ts';
import { chooseSnapshots } from './run.ts';
import { engineForType } from './registry.ts';
import { DatabaseConfigError, DatabaseRecoveryError, UnsupportedDatabaseError } from './errors.ts';
import type { DatabaseConnection } from './types.ts';
import type { SnapshotInfo } from '../restic/types.ts';

const pg: DatabaseConnection = { engine: 'postgres', host: 'pg.demo.svc', port: 5432, user: 'postgres', password: 'sekret', databases: [] };

test('no plan puts the password on a command line; each puts it in the tool\'s env', () => {
  const plans = [
    ...postgres.planBackup(pg, ['a']).map((s) => s.dump),
    ...postgres.planBackup({ ...pg, databases: ['a', 'b'] }, []).map((s) => s.dump),
    postgres.planRestore(pg),
    ...mariadb.planBackup({ ...pg, engine: 'mariadb' }, []).map((s) => s.dump),
    mariadb.planRestore({ ...pg, engine: 'mariadb' }),
    ...redis.planBackup({ ...pg, engine: 'redis' }).map((s) => s.dump),
  ];
  for (const plan of plans) {
    assert.ok(!plan.command.join(' ').includes('sekret'), plan.command.join(' '));
    assert.ok(Object.values(plan.env).includes('sekret'));
  }
  assert.equal(postgres.planRestore(pg).env['PGPASSWORD'], 'sekret');
  assert.equal(mariadb.planRestore({ ...pg, engine: 'mariadb' }).env['MYSQL_PWD'], 'sekret');
  assert.equal(redis.planBackup({ ...pg, engine: 'redis' })[0]?.dump.env['REDISCLI_AUTH'], 'sekret');
});

test('postgres: pg_dumpall for all, one pg_dump snapshot per named database', () => {
  const all = postgres.planBackup(pg, ['app', 'postgres']);
  assert.equal(all.length, 1);
  assert.equal(all[0]?.dump.command[0], 'pg_dumpall');
  assert.ok(all[0]?.dump.command.includes('--clean'));
  assert.deepEqual(all[0]?.tags, ['stash.engine=postgres', 'stash.database=all', 'stash.db=app', 'stash.db=postgres']);
  const named = postgres.planBackup({ ...pg, databases: ["it's", 'b'] }, []);
  assert.deepEqual(named.map((s) => s.database), ["it's", 'b']);
  assert.ok(named[0]?.dump.command.includes("dbname='it\\'s'"));
  assert.deepEqual(named.map((s) => s.filename), ['postgres.sql', 'postgres.sql']);
  const restore = postgres.planRestore(pg).command;
  assert.ok(restore.includes('ON_ERROR_STOP=1'));
});

test('mariadb: one consistent dump with routines, triggers, events', () => {
  const [step] = mariadb.planBackup({ ...pg, engine: 'mariadb', user: 'root', databases: ['x', 'y'] }, []);
  assert.ok(step);
  for (const flag of ['--single-transaction', '--routines', '--triggers', '--events']) assert.ok(step.dump.command.includes(flag), flag);
  assert.deepEqual(step.dump.command.slice(-3), ['--databases', 'x', 'y']);
  assert.deepEqual(step.tags, ['stash.engine=mariadb', 'stash.database=x+y', 'stash.db=x', 'stash.db=y']);
});

test('redis: an RDB of everything; naming databases is refused', () => {
  const [step] = redis.planBackup({ ...pg, engine: 'redis', user: undefined });
  assert.deepEqual(step?.dump.command.slice(-2), ['--rdb', '-']);
  assert.equal(step?.filename, 'redis.rdb');
  assert.throws(() => redis.planBackup({ ...pg, engine: 'redis', databases: ['1'] }), DatabaseConfigError);
  assert.deepEqual(redis.keyspace(redis.parseInfo('# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=0\r\ndb4:keys=10,expires=0,avg_ttl=0\r\n')), { db0: 3, db4: 10 });
});

test('redis: RDB versions the server can read', () => {
  assert.equal(redis.rdbVersion(Buffer.from('REDIS0010')), 10);
  assert.equal(redis.rdbVersion(Buffer.from('PGDMP')), undefined);
  assert.equal(redis.maxRdbVersion('7.0.15'), 10);
  assert.equal(redis.maxRdbVersion('7.2.4'), 11);
  assert.equal(redis.maxRdbVersion('8.0.1'), 12);
  assert.equal(redis.maxRdbVersion('6.2.14'), 9);
  assert.equal(redis.maxRdbVersion('garbage'), undefined);
});

test('registry: kubedb and plain types, unknown ones named with the known list', () => {
  assert.equal(engineForType('kubedb.com/postgres'), 'postgres');
  assert.equal(engineForType('kubedb.com/mysql'), 'mariadb');
  assert.equal(engineForType('MariaDB'), 'mariadb');
  assert.equal(engineForType('redis'), 'redis');
  assert.throws(() => engineForType('kubedb.com/elasticsearch'), (err: Error) => err instanceof UnsupportedDatabaseError && /kubedb\.com\/redis/.test(err.message));
});

test('the role filter skips only the restoring user\'s DROP/CREATE ROLE, before the first \\connect', async () => {
  const dump = [
    'DROP DATABASE IF EXISTS shop;', 'DROP ROLE IF EXISTS app;', 'DROP ROLE IF EXISTS postgres;', 'CREATE ROLE app;', 'CREATE ROLE postgres;',
    'ALTER ROLE postgres WITH SUPERUSER;', '\\connect template1', 'CREATE ROLE postgres;', 'COPY t FROM stdin;', 'ü-data', '',
  ].join('\n');
  // Feed it one byte at a time: lines and multi-byte characters split across chunks.
  const bytes = Buffer.from(dump);
  const source = Readable.from((function* () { for (const b of bytes) yield Buffer.from([b]); })());
  const out = await text(source.pipe(postgres.currentRoleFilter('postgres')));
  assert.equal(out, dump
    .replace('DROP ROLE IF EXISTS postgres;', '-- stash: skipped DROP ROLE IF EXISTS postgres;')
    .replace('CREATE ROLE postgres;\nALTER', '-- stash: skipped CREATE ROLE postgres;\nALTER'));
  assert.match(out, /\\connect template1\nCREATE ROLE postgres;/, 'after \\connect everything passes unchanged');
  assert.equal(postgres.quoteIdent('Admin'), '"Admin"');
});

const snap = (id: string, time: string, tags: string[]): SnapshotInfo => ({ id: `${id}${'0'.repeat(56)}`, shortId: id, time, hostname: 'host-0', paths: ['/x.sql'], tags });

test('chooseSnapshots: latest "all" snapshot, latest per named database, or an explicit ID', () => {
  const snaps = [
    snap('aaaaaaaa', '2026-01-01T00:00:00Z', ['stash.engine=postgres', 'stash.database=all', 'stash.db=shop']),
    snap('bbbbbbbb', '2026-01-02T00:00:00Z', ['stash.engine=postgres', 'stash.database=all', 'stash.db=shop']),
    snap('cccccccc', '2026-01-03T00:00:00Z', ['stash.engine=postgres', 'stash.database=shop', 'stash.db=shop']),
    snap('dddddddd', '2026-01-04T00:00:00Z', ['stash.engine=redis', 'stash.database=all']),
  ];
  assert.deepEqual(chooseSnapshots(pg, snaps).map((s) => s.shortId), ['bbbbbbbb']);
  assert.deepEqual(chooseSnapshots({ ...pg, databases: ['shop'] }, snaps).map((s) => s.shortId), ['cccccccc']);
  assert.deepEqual(chooseSnapshots(pg, snaps, 'aaaaaaaa').map((s) => s.shortId), ['aaaaaaaa']);
  assert.throws(() => chooseSnapshots(pg, snaps, 'dddddddd'), (err: Error) => err instanceof DatabaseRecoveryError && /not a postgres backup/.test(err.message));
  assert.throws(() => chooseSnapshots({ ...pg, databases: ['nope'] }, snaps), (err: Error) => err instanceof DatabaseRecoveryError && /"nope"/.test(err.message));
  assert.throws(() => chooseSnapshots({ ...pg, engine: 'mariadb' }, snaps), (err: Error) => err instanceof DatabaseRecoveryError && /no mariadb snapshot/.test(err.message));
});
