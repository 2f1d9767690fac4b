// planDatabaseJob over the design's database samples and the default pg-backup AgentTemplate.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { V1Container, V1EnvVar, V1Job } from '@kubernetes/client-node';
import { parse, parseAllDocuments } from 'yaml';
import { agentTemplate as agentTemplateSchema, appBinding as appBindingSchema, backup as backupSchema, repository as repositorySchema } from '../../shared/api/index.ts';
import type { AgentTemplate, AppBinding, Backup, BackupTrigger, Repository } from '../../shared/api/index.ts';
import { dumpContainerName, failedHosts, hostFinished, jobName, jobOutcome, planDatabaseJob } from './plan.ts';
import type { DatabaseJobInput, JobPlan } from './plan.ts';

const root = new URL('../../', import.meta.url);
const sample = (file: string): unknown => parse(readFileSync(new URL(`test/fixtures/design-samples/${file}`, root), 'utf8'));
const designAppBinding = appBindingSchema.parse(sample('05-appbinding.yaml'));
const designBackup = backupSchema.parse(sample('06-backup-database.yaml'));
const designTemplate = agentTemplateSchema.parse(sample('16-agent-template-pg-backup.yaml'));
const designRepository = repositorySchema.parse(sample('01-repository.yaml'));
const defaults = parseAllDocuments(readFileSync(new URL('shared/api/defaults/agent-templates.yaml', root), 'utf8')).map((d) => d.toJS() as AgentTemplate);
const defaultPgBackup = agentTemplateSchema.parse(defaults.find((t) => t.metadata.name === 'pg-backup'));

const trigger: BackupTrigger = {
  apiVersion: 'stash.appscode.com/v1alpha2', kind: 'BackupTrigger',
  metadata: { name: 'backup-database-demo-1795604400', namespace: 'demo', uid: 'trigger-uid' },
  spec: { targetBackup: { name: 'backup-database-demo' }, origin: 'Schedule', scheduledTime: '2026-11-25T11:00:00Z' },
};

function input(overrides: Partial<DatabaseJobInput> = {}): DatabaseJobInput {
  return {
    backup: designBackup, trigger, agentTemplate: defaultPgBackup, appBinding: designAppBinding, repository: designRepository,
    options: { functionsUrl: 'http://handle-trigger.stash-system.svc.cluster.local' }, ...overrides,
  };
}

function withSpec<T extends { spec: object }>(object: T, spec: Partial<T['spec']>): T {
  return { ...object, spec: { ...object.spec, ...spec } };
}

function job(plan: JobPlan): V1Job {
  assert.ok(plan.ok, plan.ok ? '' : `${plan.reason}: ${plan.message}`);
  return plan.job;
}

function container(j: V1Job, name: string): V1Container {
  const spec = j.spec?.template.spec;
  const c = [...(spec?.initContainers ?? []), ...(spec?.containers ?? [])].find((x) => x.name === name);
  assert.ok(c, `container ${name}`);
  return c;
}

const envOf = (c: V1Container): Record<string, V1EnvVar> => Object.fromEntries((c.env ?? []).map((e) => [e.name, e]));

const stashEnv: V1EnvVar[] = [
  { name: 'BACKUP_NAME', value: 'backup-database-demo' },
  { name: 'NAMESPACE', value: 'demo' },
  { name: 'TRIGGER_NAME', value: 'backup-database-demo-1795604400' },
  { name: 'POD_NAME', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.name' } } },
  { name: 'STASH_HOST', value: 'host-0' },
  { name: 'PUSH_GATEWAY_URL' },
  { name: 'ENABLE_STATUS_SUB_RESOURCE', value: 'true' },
  { name: 'ENABLE_ANALYTICS', value: 'false' },
  { name: 'STASH_FUNCTIONS_URL', value: 'http://handle-trigger.stash-system.svc.cluster.local' },
  { name: 'STASH_TOKEN_FILE', value: '/var/run/secrets/stash/token' },
  { name: 'STASH_REPOSITORY_SECRET_DIR', value: '/etc/stash/repository' },
];
const dbEnv: V1EnvVar[] = [
  { name: 'DB_TYPE', value: 'kubedb.com/postgres' },
  { name: 'DB_HOST', value: 'quick-postgres.demo.svc' },
  { name: 'DB_PORT', value: '5432' },
  { name: 'DB_SCHEME', value: 'http' },
  { name: 'DB_INSECURE_SKIP_TLS_VERIFY', value: 'true' },
  { name: 'DB_USER', valueFrom: { secretKeyRef: { name: 'quick-postgres-auth', key: 'POSTGRES_USER', optional: true } } },
  { name: 'DB_PASSWORD', valueFrom: { secretKeyRef: { name: 'quick-postgres-auth', key: 'POSTGRES_PASSWORD' } } },
];
const stashMounts = [
  { name: 'tmp', mountPath: '/tmp' },
  { name: 'stash-repository', mountPath: '/etc/stash/repository', readOnly: true },
  { name: 'stash-token', mountPath: '/var/run/secrets/stash', readOnly: true },
];
const resources = { requests: { memory: '64Mi', cpu: '250m' }, limits: { memory: '128Mi', cpu: '500m' } };
const labels = {
  'app.kubernetes.io/managed-by': 'stash', 'app.kubernetes.io/component': 'database-backup',
  'stash.appscode.com/backup': 'backup-database-demo', 'stash.appscode.com/backuptrigger': 'backup-database-demo-1795604400',
};

test('planDatabaseJob: the design Backup with the default pg-backup AgentTemplate gives exactly this Job', () => {
  const expected: V1Job = {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: {
      name: 'backup-database-demo-1795604400-job',
      namespace: 'demo',
      labels,
      ownerReferences: [{ apiVersion: 'stash.appscode.com/v1alpha2', kind: 'BackupTrigger', name: 'backup-database-demo-1795604400', uid: 'trigger-uid', controller: true, blockOwnerDeletion: true }],
    },
    spec: {
      backoffLimit: 0,
      activeDeadlineSeconds: 21600,
      ttlSecondsAfterFinished: 86400,
      template: {
        metadata: { labels },
        spec: {
          restartPolicy: 'Never',
          automountServiceAccountToken: false,
          initContainers: [
            {
              name: 'stash-init', image: 'stash-agent:0.1.0', command: ['stash'], args: ['init', '--backup-name=$(BACKUP_NAME)'],
              env: stashEnv, volumeMounts: stashMounts, resources, imagePullPolicy: 'IfNotPresent',
            },
            {
              name: 'pg-backup', image: 'stash-agent:0.1.0', command: ['stash'],
              args: ['backup', '--backup-name=$(BACKUP_NAME)', '--pushgateway-url=$(PUSH_GATEWAY_URL)', '--enable-status-subresource=$(ENABLE_STATUS_SUB_RESOURCE)', '--metrics-dir=/tmp/metrics.txt', 'mydb', 'anotherdb'],
              env: [...stashEnv, ...dbEnv], volumeMounts: stashMounts, resources, imagePullPolicy: 'IfNotPresent',
            },
          ],
          containers: [
            {
              name: 'stash-update-status', image: 'stash-agent:0.1.0', command: ['stash'],
              args: ['update-repo-status', '--backup-name=$(BACKUP_NAME)', '--pushgateway-url=$(PUSH_GATEWAY_URL)', '--enable-status-subresource=$(ENABLE_STATUS_SUB_RESOURCE)', '--metrics-dir=/tmp/metrics.txt'],
              env: stashEnv, volumeMounts: stashMounts, resources, imagePullPolicy: 'IfNotPresent',
            },
          ],
          volumes: [
            { name: 'tmp', emptyDir: {} },
            { name: 'stash-repository', secret: { secretName: 'gcs-secret', optional: true } },
            { name: 'stash-token', projected: { sources: [{ serviceAccountToken: { audience: 'stash', expirationSeconds: 3600, path: 'token' } }] } },
          ],
          nodeSelector: { 'cloud.google.com/gke-nodepool': 'pool-highcpu32' },
        },
      },
    },
  };
  assert.deepEqual(job(planDatabaseJob(input())), expected);
});

test('planDatabaseJob: the design pg-backup AgentTemplate: its placeholders filled, args to its backup command', () => {
  const j = job(planDatabaseJob(input({ agentTemplate: designTemplate })));
  assert.equal(dumpContainerName(designTemplate.spec), 'postgres-tools');
  const tools = container(j, 'postgres-tools');
  assert.deepEqual(tools.command, ['backup']);
  assert.deepEqual(tools.args, ['mydb', 'anotherdb']);
  const env = envOf(tools);
  assert.deepEqual(env.PGPASSWORD, { name: 'PGPASSWORD', valueFrom: { secretKeyRef: { name: 'quick-postgres-auth', key: 'POSTGRES_PASSWORD' } } });
  assert.deepEqual(env.DB_USER, { name: 'DB_USER', valueFrom: { secretKeyRef: { name: 'quick-postgres-auth', key: 'POSTGRES_USER' } } });
  assert.deepEqual(env.DB_HOST, { name: 'DB_HOST', value: 'quick-postgres.demo.svc' });
  assert.deepEqual(env.DATA_DIR, { name: 'DATA_DIR', value: '/tmp/data' });
  assert.deepEqual(env.DB_PASSWORD?.valueFrom?.secretKeyRef, { name: 'quick-postgres-auth', key: 'POSTGRES_PASSWORD' });
  const init = container(j, 'stash-init');
  assert.deepEqual(init.args, ['init', '--backup-name=$(BACKUP_NAME)']);
  assert.equal(envOf(init).DB_PASSWORD, undefined, 'credentials reach only the dump container');
  const status = container(j, 'stash-update-status');
  assert.equal(envOf(status).DB_USER, undefined);
  assert.deepEqual(status.volumeMounts, stashMounts, 'the status container reads /tmp/metrics.txt from the shared tmp volume');
  assert.equal(JSON.stringify(j).includes('<'), false, 'no placeholder is left');
});

interface Case {
  name: string;
  input: Partial<DatabaseJobInput>;
  check: (plan: JobPlan) => void;
}

const cases: Case[] = [
  {
    name: 'podAttributes reach the pod',
    input: {
      backup: withSpec(designBackup, {
        podAttributes: {
          nodeSelector: { disk: 'ssd' },
          affinity: { nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'zone', operator: 'In', values: ['a'] }] }] } } },
          tolerations: [{ key: 'dedicated', operator: 'Equal', value: 'backup', effect: 'NoSchedule' }],
          serviceAccountName: 'backup-sa',
          priorityClassName: 'low',
          securityContext: { runAsUser: 1000, fsGroup: 2000 },
          imagePullSecrets: [{ name: 'registry' }],
        },
      }),
    },
    check: (plan) => {
      const spec = job(plan).spec?.template.spec;
      assert.deepEqual(spec?.nodeSelector, { disk: 'ssd' });
      assert.deepEqual(spec?.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms[0]?.matchExpressions?.[0]?.values, ['a']);
      assert.deepEqual(spec?.tolerations, [{ key: 'dedicated', operator: 'Equal', value: 'backup', effect: 'NoSchedule' }]);
      assert.equal(spec?.serviceAccountName, 'backup-sa');
      assert.equal(spec?.priorityClassName, 'low');
      assert.deepEqual(spec?.securityContext, { runAsUser: 1000, fsGroup: 2000 });
      assert.deepEqual(spec?.imagePullSecrets, [{ name: 'registry' }]);
      assert.equal(spec?.automountServiceAccountToken, false);
    },
  },
  {
    name: 'containerAttributes env, securityContext and imagePullPolicy reach every container; args only the dump',
    input: {
      backup: withSpec(designBackup, {
        containerAttributes: {
          args: ['--single-transaction'], env: [{ name: 'TZ', value: 'UTC' }], securityContext: { runAsNonRoot: true }, imagePullPolicy: 'Always',
        },
      }),
    },
    check: (plan) => {
      const j = job(plan);
      for (const name of ['stash-init', 'pg-backup', 'stash-update-status']) {
        const c = container(j, name);
        assert.deepEqual(envOf(c).TZ, { name: 'TZ', value: 'UTC' });
        assert.deepEqual(c.securityContext, { runAsNonRoot: true });
        assert.equal(c.imagePullPolicy, 'Always');
        assert.equal(c.resources, undefined);
      }
      assert.equal(container(j, 'pg-backup').args?.at(-1), '--single-transaction');
      assert.equal(container(j, 'stash-init').args?.includes('--single-transaction'), false);
    },
  },
  {
    name: 'clientConfig.url gives host, port (engine default when absent) and scheme',
    input: { appBinding: withSpec(designAppBinding, { clientConfig: { url: 'postgres://db.example.com/app' } }) },
    check: (plan) => {
      const env = envOf(container(job(plan), 'pg-backup'));
      assert.equal(env.DB_HOST?.value, 'db.example.com');
      assert.equal(env.DB_PORT?.value, '5432');
      assert.equal(env.DB_SCHEME?.value, 'postgres');
      assert.equal(env.DB_INSECURE_SKIP_TLS_VERIFY, undefined);
    },
  },
  {
    name: 'a password in clientConfig.url is refused (it would land in the Job spec)',
    input: { appBinding: withSpec(designAppBinding, { clientConfig: { url: 'postgres://u:hunter2@db:5432' } }) },
    check: (plan) => {
      assert.equal(plan.ok, false);
      assert.ok(!plan.ok);
      assert.equal(plan.reason, 'InvalidAppBinding');
      assert.match(plan.message, /holds a password.*move it to the Secret/);
      assert.equal(plan.message.includes('hunter2'), false);
    },
  },
  {
    name: 'an unsupported AppBinding type',
    input: { appBinding: withSpec(designAppBinding, { type: 'kubedb.com/mongodb' }) },
    check: (plan) => {
      assert.ok(!plan.ok);
      assert.equal(plan.reason, 'UnsupportedDatabase');
      assert.match(plan.message, /kubedb\.com\/mongodb, which Stash cannot back up: use one of kubedb\.com\/postgres/);
    },
  },
  {
    name: 'MySQL: KubeDB root credentials and port 3306 from a url',
    input: { appBinding: withSpec(designAppBinding, { type: 'kubedb.com/mysql', clientConfig: { url: 'mysql://my.demo.svc' } }) },
    check: (plan) => {
      const env = envOf(container(job(plan), 'pg-backup'));
      assert.equal(env.DB_PORT?.value, '3306');
      assert.equal(env.DB_USER?.valueFrom?.secretKeyRef?.key, 'MYSQL_ROOT_USERNAME');
      assert.equal(env.DB_PASSWORD?.valueFrom?.secretKeyRef?.key, 'MYSQL_ROOT_PASSWORD');
    },
  },
  {
    name: 'an AppBinding without a Secret: no credential variables',
    input: { appBinding: { ...designAppBinding, spec: { type: designAppBinding.spec.type, clientConfig: designAppBinding.spec.clientConfig } } },
    check: (plan) => {
      const env = envOf(container(job(plan), 'pg-backup'));
      assert.equal(env.DB_USER, undefined);
      assert.equal(env.DB_PASSWORD, undefined);
    },
  },
  {
    name: 'the design template needs the AppBinding Secret for <secret name>',
    input: { agentTemplate: designTemplate, appBinding: { ...designAppBinding, spec: { type: designAppBinding.spec.type, clientConfig: designAppBinding.spec.clientConfig } } },
    check: (plan) => {
      assert.ok(!plan.ok);
      assert.equal(plan.reason, 'InvalidAgentTemplate');
      assert.match(plan.message, /postgres-tools env PGPASSWORD reads <secret name> but AppBinding quick-postgres names no spec\.secret/);
    },
  },
  {
    name: 'containerAttributes.env may not set what Stash sets',
    input: { backup: withSpec(designBackup, { containerAttributes: { env: [{ name: 'BACKUP_NAME', value: 'other' }] } }) },
    check: (plan) => {
      assert.ok(!plan.ok);
      assert.equal(plan.reason, 'ReservedEnvironmentVariable');
      assert.match(plan.message, /sets BACKUP_NAME, which Stash sets itself/);
    },
  },
  {
    name: 'an unknown placeholder in the template',
    input: { agentTemplate: withSpec(designTemplate, { containers: [{ name: 'x', image: 'x', env: [{ name: 'WHERE', value: '<bucket>' }] }] }) },
    check: (plan) => {
      assert.ok(!plan.ok);
      assert.equal(plan.reason, 'InvalidAgentTemplate');
      assert.match(plan.message, /WHERE is the placeholder <bucket>, which Stash cannot fill/);
    },
  },
  {
    name: 'a template mounting a volume the Job lacks',
    input: { agentTemplate: withSpec(defaultPgBackup, { containers: [{ name: 'x', image: 'x', volumeMounts: [{ name: 'data', mountPath: '/data' }] }] }) },
    check: (plan) => {
      assert.ok(!plan.ok);
      assert.match(plan.message, /mounts volume data, which a database backup Job does not have/);
    },
  },
  {
    name: 'a Repository in another namespace cannot lend its Secret',
    input: { repository: { ...designRepository, metadata: { ...designRepository.metadata, namespace: 'backups' } } },
    check: (plan) => {
      assert.ok(!plan.ok);
      assert.equal(plan.reason, 'RepositoryUnusable');
      assert.match(plan.message, /create the Repository and its Secret in demo/);
    },
  },
  {
    name: 'a local backend: its volume mounted at mountPath in every container',
    input: { repository: withSpec<Repository>(designRepository, { backend: { local: { mountPath: '/repo', persistentVolumeClaim: { claimName: 'repo-pvc' } }, storageSecretName: 'local-secret' } }) },
    check: (plan) => {
      const j = job(plan);
      assert.deepEqual(j.spec?.template.spec?.volumes?.find((v) => v.name === 'stash-local-repository'), { name: 'stash-local-repository', persistentVolumeClaim: { claimName: 'repo-pvc' } });
      assert.deepEqual(j.spec?.template.spec?.volumes?.find((v) => v.name === 'stash-repository')?.secret, { secretName: 'local-secret', optional: true });
      for (const name of ['stash-init', 'pg-backup', 'stash-update-status']) {
        assert.ok(container(j, name).volumeMounts?.some((m) => m.name === 'stash-local-repository' && m.mountPath === '/repo'));
      }
    },
  },
  {
    name: 'options: deadline, TTL, Pushgateway',
    input: { options: { activeDeadlineSeconds: 600, ttlSecondsAfterFinished: 60, pushGatewayUrl: 'http://pushgateway:9091' } },
    check: (plan) => {
      const j = job(plan);
      assert.equal(j.spec?.activeDeadlineSeconds, 600);
      assert.equal(j.spec?.ttlSecondsAfterFinished, 60);
      assert.equal(envOf(container(j, 'stash-init')).PUSH_GATEWAY_URL?.value, 'http://pushgateway:9091');
      assert.equal(envOf(container(j, 'stash-init')).STASH_FUNCTIONS_URL?.value, 'http://handle-trigger.stash-system.svc.cluster.local');
    },
  },
];

for (const c of cases) {
  test(`planDatabaseJob: ${c.name}`, () => {
    c.check(planDatabaseJob(input(c.input)));
  });
}

test('jobName: <trigger>-job, at most 63 characters, distinct for distinct long triggers', () => {
  assert.equal(jobName('db-1795604400'), 'db-1795604400-job');
  const a = jobName(`${'a'.repeat(80)}-1795604400`);
  const b = jobName(`${'a'.repeat(80)}-1795608000`);
  assert.ok(a.length <= 63 && b.length <= 63);
  assert.notEqual(a, b);
  assert.match(a, /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
  const long = job(planDatabaseJob(input({ trigger: { ...trigger, metadata: { ...trigger.metadata, name: `${'b'.repeat(200)}-1795604400` } } })));
  assert.ok((long.metadata?.name ?? '').length <= 63);
  for (const value of Object.values(long.metadata?.labels ?? {})) assert.ok(value.length <= 63);
});

test('jobOutcome: Failed and DeadlineExceeded end the run; Complete only after a grace without a report', () => {
  const now = new Date('2026-11-25T12:00:00Z');
  const failed: V1Job = { metadata: { name: 'j' }, status: { conditions: [{ type: 'Failed', status: 'True', reason: 'DeadlineExceeded', message: 'Job was active longer than specified deadline', lastTransitionTime: new Date('2026-11-25T11:59:00Z') }] } };
  assert.deepEqual(jobOutcome(failed, now), {
    failed: true, at: '2026-11-25T11:59:00Z',
    error: 'Job j failed (DeadlineExceeded: Job was active longer than specified deadline); see the Job\'s pod logs (kubectl logs job/j --all-containers)',
  });
  const complete = (at: string): V1Job => ({ metadata: { name: 'j' }, status: { conditions: [{ type: 'Complete', status: 'True', lastTransitionTime: new Date(at) }] } });
  assert.equal(jobOutcome(complete('2026-11-25T11:59:30Z'), now), undefined);
  assert.match(jobOutcome(complete('2026-11-25T11:50:00Z'), now)?.error ?? '', /completed but its agent never reported/);
  assert.equal(jobOutcome({ metadata: { name: 'j' }, status: { active: 1 } }, now), undefined);
});

test('failedHosts keeps what the host entry had and adds the error; hostFinished', () => {
  const running: BackupTrigger = { ...trigger, status: { phase: 'Running', hosts: [{ host: 'host-0', phase: 'Running', pod: 'p', startTime: '2026-11-25T11:00:10Z' }] } };
  assert.equal(hostFinished(running), false);
  const hosts = failedHosts(running, 'Job x failed', new Date('2026-11-25T12:00:00Z'), 'x');
  assert.deepEqual(hosts, [{ host: 'host-0', phase: 'Failed', pod: 'p', startTime: '2026-11-25T11:00:10Z', completionTime: '2026-11-25T12:00:00Z', error: 'Job x failed', job: 'x' }]);
  assert.equal(hostFinished({ ...running, status: { phase: 'Running', hosts } }), true);
  assert.deepEqual(failedHosts(trigger, 'e', new Date('2026-11-25T12:00:00Z'), undefined), [{ host: 'host-0', phase: 'Failed', completionTime: '2026-11-25T12:00:00Z', error: 'e' }]);
});

// The schemas accept what the samples hold: the fixtures are the design's, not hand-tuned.
test('the samples parse as the Stash API', () => {
  const b: Backup = designBackup;
  const a: AppBinding = designAppBinding;
  assert.equal(b.spec.targetRef.kind, 'AppBinding');
  assert.equal(a.spec.secret?.name, 'quick-postgres-auth');
});
