import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  AgentConfigError, agentSettings, databaseFlagsFromEnv, metricsLocation, optionalUrl, secretKeysFrom, succeeded, targetLabel,
} from './agent-env.ts';
import { UsageError } from './args.ts';

describe('agentSettings', () => {
  const base = { NAMESPACE: 'demo', BACKUP_NAME: 'b1', STASH_FUNCTIONS_URL: 'http://handle-trigger.stash-system.svc' };
  it('reads the sidecar environment, with defaults for host, token and Secret dir', () => {
    assert.deepEqual(agentSettings(base, undefined), {
      namespace: 'demo', backup: 'b1', host: 'host-0', functionsUrl: 'http://handle-trigger.stash-system.svc',
      tokenFile: '/var/run/secrets/stash/token', secretDir: '/etc/stash/repository', trigger: undefined,
    });
  });
  it('--backup-name wins over $BACKUP_NAME; STASH_HOST and TRIGGER_NAME are taken', () => {
    const s = agentSettings({ ...base, STASH_HOST: 'host-2', TRIGGER_NAME: 'b1-1700000000', STASH_REPOSITORY_SECRET_DIR: '/x' }, 'other');
    assert.equal(s.backup, 'other');
    assert.equal(s.host, 'host-2');
    assert.equal(s.trigger, 'b1-1700000000');
    assert.equal(s.secretDir, '/x');
  });
  it('names what is missing', () => {
    assert.throws(() => agentSettings({ BACKUP_NAME: 'b1' }, undefined), (e: Error) => e instanceof AgentConfigError && /\$NAMESPACE/.test(e.message));
    assert.throws(() => agentSettings({ NAMESPACE: 'demo' }, undefined), (e: Error) => e instanceof UsageError && /--backup-name/.test(e.message));
    assert.throws(() => agentSettings({ ...base, STASH_FUNCTIONS_URL: 'handle-trigger' }, undefined), /STASH_FUNCTIONS_URL "handle-trigger" must be an http/);
    assert.equal(agentSettings({ NAMESPACE: 'demo', BACKUP_NAME: 'b1' }, undefined).functionsUrl, undefined);
  });
});

describe('metricsLocation', () => {
  it('a directory (existing, trailing slash, or no extension) holds the default file', () => {
    assert.deepEqual(metricsLocation('/var/metrics', 'stash.prom', true), { dir: '/var/metrics', fileName: 'stash.prom' });
    assert.deepEqual(metricsLocation('/var/new/', 'stash.prom', undefined), { dir: '/var/new/', fileName: 'stash.prom' });
    assert.deepEqual(metricsLocation('/var/new', 'stash.prom', undefined), { dir: '/var/new', fileName: 'stash.prom' });
  });
  it('a file path as the design writes it (--metrics-dir=/tmp/metrics.txt)', () => {
    assert.deepEqual(metricsLocation('/tmp/metrics.txt', 'stash.prom', undefined), { dir: '/tmp', fileName: 'metrics.txt' });
    assert.deepEqual(metricsLocation('/tmp/metrics', 'stash.prom', false), { dir: '/tmp', fileName: 'metrics' });
  });
});

describe('optionalUrl', () => {
  it('an empty value (from an empty $(PUSH_GATEWAY_URL)) is none; a non-URL is refused', () => {
    assert.equal(optionalUrl('', 'pushgateway-url'), undefined);
    assert.equal(optionalUrl(undefined, 'pushgateway-url'), undefined);
    assert.equal(optionalUrl('http://pg:9091', 'pushgateway-url'), 'http://pg:9091');
    assert.throws(() => optionalUrl('pg:9091', 'pushgateway-url'), /--pushgateway-url must be an http/);
  });
});

describe('databaseFlagsFromEnv', () => {
  it('launch-db-job env to connection flags; the password stays in the env (DB_PASSWORD)', () => {
    assert.deepEqual(databaseFlagsFromEnv({ DB_TYPE: 'kubedb.com/postgres', DB_HOST: 'pg.demo.svc', DB_PORT: '5432', DB_USER: 'app', DB_PASSWORD: 'pw' }, ['shop']), {
      type: 'kubedb.com/postgres', host: 'pg.demo.svc', port: 5432, user: 'app', passwordEnv: 'DB_PASSWORD', databases: ['shop'],
    });
    // An optional secretKeyRef for the user resolves to an empty value: the engine's default user.
    assert.equal(databaseFlagsFromEnv({ DB_TYPE: 'redis', DB_HOST: 'r', DB_USER: '' }, []).user, undefined);
  });
  it('names the missing variable', () => {
    assert.throws(() => databaseFlagsFromEnv({ DB_HOST: 'x' }, []), /\$DB_TYPE is not set/);
    assert.throws(() => databaseFlagsFromEnv({ DB_TYPE: 'postgres' }, []), /\$DB_HOST is not set/);
    assert.throws(() => databaseFlagsFromEnv({ DB_TYPE: 'postgres', DB_HOST: 'x', DB_PORT: 'http' }, []), /\$DB_PORT "http" is not a TCP port/);
  });
});

describe('run results', () => {
  it('Secret files: the kubelet\'s dot entries are not keys', () => {
    assert.deepEqual(secretKeysFrom([{ name: '..data', content: '' }, { name: 'RESTIC_PASSWORD', content: 'pw' }, { name: '..2026_01', content: '' }]), { RESTIC_PASSWORD: 'pw' });
  });
  it('a Succeeded outcome carries snapshot, bytes, files and the repository stats', () => {
    assert.deepEqual(succeeded({ snapshotId: 'abc', bytesAdded: 10.4, files: 3, repository: { snapshotCount: 2, totalSize: 99 } }),
      { phase: 'Succeeded', snapshotId: 'abc', bytes: 10, files: 3, repository: { snapshotCount: 2, totalSize: 99 } });
    assert.deepEqual(succeeded({ snapshotId: '', bytesAdded: 0, files: 0 }), { phase: 'Succeeded', bytes: 0, files: 0 });
  });
  it('the metrics target label comes from the identity tags', () => {
    const tags = ['stash.appscode.com/namespace=demo', 'stash.appscode.com/backup=b1', 'stash.appscode.com/kind=Deployment', 'stash.appscode.com/workload=web'];
    assert.equal(targetLabel({ targetKind: 'Deployment', tags, backup: 'b1' }), 'deployment/web');
    assert.equal(targetLabel({ targetKind: 'AppBinding', tags: [], backup: 'b1' }), 'appbinding/b1');
  });
});
