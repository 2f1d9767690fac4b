// run-recovery's planner over the design's Recovery samples (03 volume, 04/13 workload, 07 database)
// and the default AgentTemplates: the exact Job / init container, the refusals, idempotence.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { V1Container, V1EnvVar, V1Job } from '@kubernetes/client-node';
import { parse, parseAllDocuments } from 'yaml';
import { agentTemplate as agentTemplateSchema, appBinding as appBindingSchema, recovery as recoverySchema, repository as repositorySchema } from '../../shared/api/index.ts';
import type { AgentTemplate, Recovery, Repository } from '../../shared/api/index.ts';
import {
  failedStatus, hostReported, jobName, jobOutcome, planInitContainer, planRecoveryJob, recoverContainerName, removalConfig, targetType,
} from './plan.ts';
import type { InitContainerInput, InitContainerPlan, JobInput, JobPlan, Workload } from './plan.ts';

const root = new URL('../../', import.meta.url);
const sample = (file: string): unknown => parse(readFileSync(new URL(`test/fixtures/design-samples/${file}`, root), 'utf8'));
const volumeRecovery = recoverySchema.parse({ ...(sample('03-recovery-volume.yaml') as object), metadata: { name: 'recovery-volume-demo', namespace: 'demo', uid: 'recovery-uid', generation: 1 } });
const workloadRecovery = recoverySchema.parse({ ...(sample('04-recovery-workload.yaml') as object), metadata: { name: 'recovery-database-demo', namespace: 'demo', uid: 'w-uid', generation: 2 } });
const autoRecovery = recoverySchema.parse(sample('13-recovery-auto.yaml'));
const databaseRecovery = recoverySchema.parse({ ...(sample('07-recovery-database.yaml') as object), metadata: { name: 'recovery-database-demo', namespace: 'demo', uid: 'db-uid' } });
const designAppBinding = appBindingSchema.parse(sample('05-appbinding.yaml'));
const designRepository = repositorySchema.parse(sample('01-repository.yaml'));
const designVolumeTemplate = agentTemplateSchema.parse(sample('15-agent-template-volume-recovery.yaml'));
const deployment = sample('11-deployment-default-backup.yaml') as Workload;
const defaults = parseAllDocuments(readFileSync(new URL('shared/api/defaults/agent-templates.yaml', root), 'utf8')).map((d) => d.toJS() as AgentTemplate);
const defaultTemplate = (name: string): AgentTemplate => agentTemplateSchema.parse(defaults.find((t) => t.metadata.name === name));
const volumeTemplate = defaultTemplate('stash-volume-recovery');
const pgRecovery = defaultTemplate('pg-recovery');
const options = { functionsUrl: 'http://handle-trigger.stash-system.svc.cluster.local' };

function withSpec(recovery: Recovery, spec: Partial<Recovery['spec']>): Recovery {
  return { ...recovery, spec: { ...recovery.spec, ...spec } };
}

function job(plan: JobPlan): V1Job {
  assert.ok(plan.ok, plan.ok ? '' : `${plan.condition.reason}: ${plan.condition.message}`);
  return plan.job;
}

function init(plan: InitContainerPlan): V1Container {
  assert.ok(plan.ok, plan.ok ? '' : `${plan.condition.reason}: ${plan.condition.message}`);
  const containers = plan.applyConfig.spec?.template.spec.initContainers ?? [];
  assert.equal(containers.length, 1);
  return containers[0] as V1Container;
}

function refused(plan: JobPlan | InitContainerPlan, reason: string, message: RegExp): void {
  assert.equal(plan.ok, false, 'refused');
  if (plan.ok) return;
  assert.equal(plan.condition.type, 'Ready');
  assert.equal(plan.condition.status, 'False');
  assert.equal(plan.condition.reason, reason);
  assert.match(plan.condition.message, message);
}

const jobInput = (overrides: Partial<JobInput> = {}): JobInput => ({ recovery: volumeRecovery, agentTemplate: volumeTemplate, repository: designRepository, options, ...overrides });
const initInput = (overrides: Partial<InitContainerInput> = {}): InitContainerInput => ({
  recovery: workloadRecovery, agentTemplate: volumeTemplate, repository: designRepository, workload: deployment, options, ...overrides,
});
const envOf = (c: V1Container): Record<string, V1EnvVar> => Object.fromEntries((c.env ?? []).map((e) => [e.name, e]));

const reportingEnv: V1EnvVar[] = [
  { name: 'PUSH_GATEWAY_URL' },
  { name: 'ENABLE_STATUS_SUB_RESOURCE', value: 'true' },
  { name: 'ENABLE_ANALYTICS', value: 'false' },
  { name: 'STASH_FUNCTIONS_URL', value: 'http://handle-trigger.stash-system.svc.cluster.local' },
  { name: 'STASH_TOKEN_FILE', value: '/var/run/secrets/stash/token' },
  { name: 'STASH_REPOSITORY_SECRET_DIR', value: '/etc/stash/repository' },
];
const labels = { 'app.kubernetes.io/managed-by': 'stash', 'app.kubernetes.io/component': 'recovery', 'stash.appscode.com/recovery': 'recovery-volume-demo' };
const agentVolumes = [
  { name: 'stash-repository', secret: { secretName: 'gcs-secret', optional: true } },
  { name: 'stash-token', projected: { sources: [{ serviceAccountToken: { audience: 'stash', expirationSeconds: 3600, path: 'token' } }] } },
];

test('targetType: the design samples', () => {
  assert.equal(targetType(volumeRecovery), 'volume');
  assert.equal(targetType(workloadRecovery), 'workload');
  assert.equal(targetType(autoRecovery), 'workload');
  assert.equal(targetType(databaseRecovery), 'database');
  assert.equal(targetType(withSpec(workloadRecovery, { recoverTo: { workload: { apiVersion: 'batch/v1', kind: 'CronJob', name: 'x' } } })), 'unsupported');
  assert.equal(targetType(withSpec(workloadRecovery, { recoverTo: { workload: { apiVersion: 'extensions/v1beta1', kind: 'Deployment', name: 'x' } } })), 'unsupported');
});

test('planRecoveryJob: the design volume Recovery with the default stash-volume-recovery AgentTemplate gives exactly this Job', () => {
  const expected: V1Job = {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: {
      name: 'recovery-volume-demo-recovery',
      namespace: 'demo',
      labels,
      ownerReferences: [{ apiVersion: 'stash.appscode.com/v1alpha2', kind: 'Recovery', name: 'recovery-volume-demo', uid: 'recovery-uid', controller: true, blockOwnerDeletion: true }],
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
          containers: [{
            name: 'stash-recover',
            image: 'stash-agent:0.1.0',
            command: ['stash'],
            args: ['recover', '--recovery-name=$(RECOVERY_NAME)', '--pushgateway-url=$(PUSH_GATEWAY_URL)', '--enable-status-subresource=$(ENABLE_STATUS_SUB_RESOURCE)', '--enable-analytics=$(ENABLE_ANALYTICS)'],
            env: [
              { name: 'RECOVERY_NAME', value: 'recovery-volume-demo' },
              { name: 'NAMESPACE', value: 'demo' },
              { name: 'POD_NAME', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.name' } } },
              { name: 'STASH_HOST', value: 'host-0' },
              { name: 'STASH_SNAPSHOT_HOST', value: 'host-0' },
              ...reportingEnv,
            ],
            volumeMounts: [
              { name: 'tmp', mountPath: '/tmp' },
              { name: 'stash-repository', mountPath: '/etc/stash/repository', readOnly: true },
              { name: 'stash-token', mountPath: '/var/run/secrets/stash', readOnly: true },
              { name: 'stash-recovery-target', mountPath: '/source/data' },
            ],
            imagePullPolicy: 'IfNotPresent',
          }],
          volumes: [
            { name: 'tmp', emptyDir: {} },
            ...agentVolumes,
            { name: 'stash-recovery-target', persistentVolumeClaim: { claimName: 'stash-recovered' } },
          ],
        },
      },
    },
  };
  assert.deepEqual(job(planRecoveryJob(jobInput())), expected);
});

test('planRecoveryJob: the design AgentTemplate (ENABLE_ANALYSTICS), a subPath, a hostPath, attributes, a local Repository, options', () => {
  const recovery = withSpec(volumeRecovery, {
    recoverTo: { volume: { mountPath: '/restore', subPath: 'data', hostPath: { path: '/var/restore', type: 'DirectoryOrCreate' } } },
    containerAttributes: { env: [{ name: 'RESTIC_CACHE_DIR', value: '/tmp/cache' }], resources: { limits: { memory: '128Mi' } }, imagePullPolicy: 'Always' },
    podAttributes: { nodeSelector: { disk: 'ssd' }, serviceAccountName: 'restorer' },
  });
  const local: Repository = { ...designRepository, spec: { backend: { local: { mountPath: '/repo', persistentVolumeClaim: { claimName: 'repo-pvc' } }, storageSecretName: 'local-secret' } } };
  const j = job(planRecoveryJob(jobInput({ recovery, agentTemplate: designVolumeTemplate, repository: local, options: { ...options, activeDeadlineSeconds: 60, ttlSecondsAfterFinished: 30, pushGatewayUrl: 'http://pgw:9091' } })));
  assert.equal(j.spec?.activeDeadlineSeconds, 60);
  assert.equal(j.spec?.ttlSecondsAfterFinished, 30);
  const pod = j.spec?.template.spec;
  assert.deepEqual(pod?.nodeSelector, { disk: 'ssd' });
  assert.equal(pod?.serviceAccountName, 'restorer');
  const c = pod?.containers[0] as V1Container;
  assert.equal(c.image, 'appscode/stash:0.8.2');
  const env = envOf(c);
  assert.deepEqual(env.ENABLE_ANALYSTICS, { name: 'ENABLE_ANALYSTICS', value: 'false' }, 'the design spells $(ENABLE_ANALYSTICS): it resolves');
  assert.deepEqual(env.PUSH_GATEWAY_URL, { name: 'PUSH_GATEWAY_URL', value: 'http://pgw:9091' });
  assert.deepEqual(env.RESTIC_CACHE_DIR, { name: 'RESTIC_CACHE_DIR', value: '/tmp/cache' });
  assert.deepEqual(c.resources, { limits: { memory: '128Mi' } });
  assert.equal(c.imagePullPolicy, 'Always');
  // The whole volume at mountPath: the agent restores into mountPath/subPath.
  assert.deepEqual(c.volumeMounts?.slice(-2), [{ name: 'stash-local-repository', mountPath: '/repo' }, { name: 'stash-recovery-target', mountPath: '/restore' }]);
  assert.deepEqual(pod?.volumes?.slice(-2), [
    { name: 'stash-local-repository', persistentVolumeClaim: { claimName: 'repo-pvc' } },
    { name: 'stash-recovery-target', hostPath: { path: '/var/restore', type: 'DirectoryOrCreate' } },
  ]);
  assert.deepEqual(pod?.volumes?.[1], { name: 'stash-repository', secret: { secretName: 'local-secret', optional: true } });
  // $(VAR) references in args all resolve through the container's env.
  for (const arg of c.args ?? []) {
    for (const [, v] of arg.matchAll(/\$\(([A-Z_]+)\)/g)) assert.ok(env[v as string], `${arg}: $(${v}) is in the env`);
  }
});

test('planRecoveryJob: the design database Recovery with pg-recovery: DB_* env on the recovering container, the AppBinding\'s Secret by reference', () => {
  const j = job(planRecoveryJob(jobInput({ recovery: databaseRecovery, agentTemplate: pgRecovery, appBinding: designAppBinding })));
  assert.equal(j.metadata?.name, 'recovery-database-demo-recovery');
  assert.deepEqual(j.metadata?.ownerReferences?.map((o) => [o.kind, o.name, o.uid, o.controller]), [['Recovery', 'recovery-database-demo', 'db-uid', true]]);
  const pod = j.spec?.template.spec;
  assert.equal(recoverContainerName(pgRecovery.spec), 'pg-recovery');
  assert.deepEqual(pod?.initContainers?.map((c) => c.name), ['pg-recovery']);
  assert.deepEqual(pod?.containers.map((c) => c.name), ['stash-update-status']);
  const recover = envOf(pod?.initContainers?.[0] as V1Container);
  assert.deepEqual(Object.keys(recover).filter((k) => k.startsWith('DB_')), ['DB_TYPE', 'DB_HOST', 'DB_PORT', 'DB_SCHEME', 'DB_INSECURE_SKIP_TLS_VERIFY', 'DB_USER', 'DB_PASSWORD']);
  assert.equal(recover.DB_HOST?.value, 'quick-postgres.demo.svc');
  assert.deepEqual(recover.DB_PASSWORD?.valueFrom, { secretKeyRef: { name: 'quick-postgres-auth', key: 'POSTGRES_PASSWORD' } });
  assert.equal(recover.RECOVERY_NAME?.value, 'recovery-database-demo');
  assert.equal(recover.STASH_SNAPSHOT_HOST?.value, 'host-0');
  assert.equal(envOf(pod?.containers[0] as V1Container).DB_HOST, undefined, 'only the recovering container gets the database');
  assert.deepEqual(pod?.initContainers?.[0]?.volumeMounts, [
    { name: 'tmp', mountPath: '/tmp' },
    { name: 'stash-repository', mountPath: '/etc/stash/repository', readOnly: true },
    { name: 'stash-token', mountPath: '/var/run/secrets/stash', readOnly: true },
  ]);
  assert.deepEqual(pod?.volumes, [{ name: 'tmp', emptyDir: {} }, ...agentVolumes]);
  assert.equal(JSON.stringify(j).includes('password'), false, 'no secret value in the Job');
});

test('planRecoveryJob: refusals name the field and the fix', () => {
  refused(planRecoveryJob(jobInput({ recovery: databaseRecovery, agentTemplate: pgRecovery, appBinding: { ...designAppBinding, spec: { ...designAppBinding.spec, type: 'kubedb.com/mongodb' } } })),
    'UnsupportedDatabase', /kubedb\.com\/mongodb, which Stash cannot recover into: use one of/);
  refused(planRecoveryJob(jobInput({ recovery: databaseRecovery, agentTemplate: pgRecovery, appBinding: { ...designAppBinding, spec: { ...designAppBinding.spec, clientConfig: { url: 'postgres://u:secret@db:5432' } } } })),
    'InvalidAppBinding', /holds a password/);
  refused(planRecoveryJob(jobInput({ repository: { ...designRepository, metadata: { name: 'stash-backup-repo', namespace: 'other' } } })),
    'RepositoryNotMountable', /in another namespace than Recovery demo\/recovery-volume-demo: .* create the Repository and its Secret in namespace demo/);
  refused(planRecoveryJob(jobInput({ recovery: withSpec(volumeRecovery, { containerAttributes: { env: [{ name: 'RECOVERY_NAME', value: 'x' }] } }) })),
    'ReservedEnvironmentVariable', /spec\.containerAttributes\.env of the Recovery sets RECOVERY_NAME/);
  refused(planRecoveryJob(jobInput({ recovery: withSpec(volumeRecovery, { recoverTo: { volume: { mountPath: '/etc/stash', emptyDir: {} } } }) })),
    'MountPathConflict', /mountPath \/etc\/stash overlaps \/etc\/stash\/repository/);
  refused(planRecoveryJob(jobInput({ agentTemplate: { ...volumeTemplate, spec: { containers: [{ ...volumeTemplate.spec.containers[0]!, volumeMounts: [{ name: 'data', mountPath: '/data' }] }] } } })),
    'InvalidAgentTemplate', /mounts volume data, which a recovery Job does not have/);
  refused(planRecoveryJob(jobInput({ recovery: workloadRecovery })), 'UnsupportedTarget', /workload, not through a Job/);
});

test('jobName: <recovery>-recovery, shortened with a hash beyond 63 characters', () => {
  assert.equal(jobName('recovery-volume-demo'), 'recovery-volume-demo-recovery');
  const long = 'r'.repeat(60);
  const name = jobName(long);
  assert.ok(name.length <= 63, name);
  assert.match(name, /^r+-[0-9a-f]{8}$/);
  assert.notEqual(jobName(`${long}a`), jobName(`${long}b`));
});

const expectedInit = {
  name: 'stash-recover',
  image: 'stash-agent:0.1.0',
  command: ['stash'],
  args: ['recover', '--recovery-name=$(RECOVERY_NAME)', '--pushgateway-url=$(PUSH_GATEWAY_URL)', '--enable-status-subresource=$(ENABLE_STATUS_SUB_RESOURCE)', '--enable-analytics=$(ENABLE_ANALYTICS)'],
  env: [
    { name: 'RECOVERY_NAME', value: 'recovery-database-demo' },
    { name: 'NAMESPACE', value: 'demo' },
    { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
    { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
    ...reportingEnv,
  ],
  volumeMounts: [
    { name: 'source-data', mountPath: '/source/data' },
    { name: 'stash-recovery-tmp', mountPath: '/tmp' },
    { name: 'stash-recovery-repository', mountPath: '/etc/stash/repository', readOnly: true },
    { name: 'stash-recovery-token', mountPath: '/var/run/secrets/stash', readOnly: true },
  ],
  imagePullPolicy: 'IfNotPresent',
};
const expectedInitVolumes = [
  { name: 'stash-recovery-tmp', emptyDir: {} },
  { name: 'stash-recovery-repository', secret: { secretName: 'gcs-secret', optional: true } },
  { name: 'stash-recovery-token', projected: { sources: [{ serviceAccountToken: { audience: 'stash', expirationSeconds: 3600, path: 'token' } }] } },
];

test('planInitContainer: the design workload Recovery and Deployment give exactly this apply configuration', () => {
  const plan = planInitContainer(initInput());
  assert.ok(plan.ok);
  assert.equal(plan.container, 'stash-recover');
  assert.deepEqual(JSON.parse(JSON.stringify(plan.applyConfig)), JSON.parse(JSON.stringify({
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'stash-demo', namespace: 'demo' },
    spec: { template: { spec: { initContainers: [expectedInit], volumes: expectedInitVolumes } } },
  })));
  assert.deepEqual(removalConfig({ apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'stash-demo', namespace: 'demo' } }),
    { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'stash-demo', namespace: 'demo' } });
});

test('planInitContainer: the design sample names pg-recovery: its recovering container, its tmp mount on the init container\'s scratch volume', () => {
  const c = init(planInitContainer(initInput({ agentTemplate: pgRecovery, recovery: autoRecovery })));
  assert.equal(c.name, 'pg-recovery');
  assert.deepEqual(c.args?.[0], 'recover');
  assert.deepEqual(c.volumeMounts?.map((m) => [m.name, m.mountPath]), [
    ['source-data', '/source/data'], ['stash-recovery-tmp', '/tmp'], ['stash-recovery-repository', '/etc/stash/repository'], ['stash-recovery-token', '/var/run/secrets/stash'],
  ]);
});

test('planInitContainer: a path below an app mount uses that mount (with its subPath); the app container\'s identity; a StatefulSet', () => {
  const workload: Workload = {
    apiVersion: 'apps/v1', kind: 'StatefulSet', metadata: { name: 'db', namespace: 'demo' },
    spec: { template: { spec: {
      securityContext: { fsGroup: 2000 },
      containers: [
        { name: 'sidecar', image: 'x', volumeMounts: [{ name: 'logs', mountPath: '/logs' }] },
        { name: 'app', image: 'y', securityContext: { runAsUser: 1000, runAsGroup: 3000, runAsNonRoot: true }, volumeMounts: [{ name: 'data', mountPath: '/var/lib/app', subPath: 'app' }, { name: 'data', mountPath: '/var/lib/app/cache', subPath: 'cache' }] },
      ],
    } } },
  };
  const recovery = withSpec(workloadRecovery, { paths: ['/var/lib/app/db/main', '/var/lib/app/cache', '/var/lib/app'], recoverTo: { workload: { apiVersion: 'apps/v1', kind: 'StatefulSet', name: 'db' } } });
  const c = init(planInitContainer(initInput({ recovery, workload })));
  assert.deepEqual(c.volumeMounts?.slice(0, 2), [{ name: 'data', mountPath: '/var/lib/app', subPath: 'app' }, { name: 'data', mountPath: '/var/lib/app/cache', subPath: 'cache' }]);
  assert.deepEqual(c.securityContext, { runAsUser: 1000, runAsGroup: 3000, runAsNonRoot: true });
  const env = envOf(c);
  assert.equal(env.STASH_SNAPSHOT_HOST, undefined, 'each pod recovers its own host (POD_NAME ordinal)');
  assert.deepEqual(env.POD_NAME?.valueFrom, { fieldRef: { fieldPath: 'metadata.name' } });
});

test('planInitContainer: refusals (no apply) name the field and the fix', () => {
  refused(planInitContainer(initInput({ recovery: withSpec(workloadRecovery, { paths: ['/elsewhere'] }) })),
    'PathNotMounted', /spec\.paths entry \/elsewhere is not on any volume the containers of Deployment demo\/stash-demo mount \(they mount \/source\/data \(busybox\)\)/);
  refused(planInitContainer(initInput({ recovery: withSpec(workloadRecovery, { paths: [] }) })), 'PathsRequired', /lists no spec\.paths/);
  const { paths: _paths, ...noPaths } = workloadRecovery.spec;
  refused(planInitContainer(initInput({ recovery: { ...workloadRecovery, spec: noPaths } })), 'PathsRequired', /list the directories to recover/);
  refused(planInitContainer(initInput({ workload: { ...deployment, metadata: { ...deployment.metadata, ownerReferences: [{ apiVersion: 'example.com/v1', kind: 'Database', name: 'pg', uid: 'u', controller: true }] } } })),
    'TargetManagedByController', /controlled by Database pg .* recover through Database pg's own operator/);
  refused(planInitContainer(initInput({ recovery: withSpec(workloadRecovery, { recoverTo: { workload: { apiVersion: 'batch/v1', kind: 'CronJob', name: 'stash-demo' } } }) })),
    'UnsupportedTarget', /CronJob stash-demo \(batch\/v1\) cannot be recovered into/);
  refused(planInitContainer(initInput({ recovery: withSpec(workloadRecovery, { recoverTo: { workload: { apiVersion: 'apps/v1beta1', kind: 'Deployment', name: 'stash-demo' } } }) })),
    'UnsupportedTarget', /set spec\.recoverTo\.workload\.apiVersion to apps\/v1/);
  refused(planInitContainer(initInput({ agentTemplate: { ...volumeTemplate, spec: { containers: [{ ...volumeTemplate.spec.containers[0]!, name: 'busybox' }] } } })),
    'NameConflict', /already has a container named busybox/);
  refused(planInitContainer(initInput({ agentTemplate: { ...volumeTemplate, spec: { containers: [{ ...volumeTemplate.spec.containers[0]!, env: [{ name: 'NODE_NAME', value: 'x' }] }] } } })),
    'ReservedEnvironmentVariable', /container stash-recover sets NODE_NAME/);
  refused(planInitContainer(initInput({ recovery: withSpec(workloadRecovery, { containerAttributes: { securityContext: { runAsUser: 0 } } }),
    workload: { ...deployment, spec: { ...deployment.spec, template: { ...deployment.spec?.template, spec: { ...deployment.spec?.template?.spec, containers: deployment.spec?.template?.spec?.containers ?? [], securityContext: { runAsNonRoot: true } } } } } })),
  'SecurityContextConflict', /would run as uid 0 while .* requires runAsNonRoot/);
  refused(planInitContainer(initInput({ workload: { ...deployment, spec: { ...deployment.spec, template: { ...deployment.spec?.template, spec: { ...deployment.spec?.template?.spec, containers: deployment.spec?.template?.spec?.containers ?? [], volumes: [{ name: 'stash-recovery-tmp', emptyDir: {} }] } } } } })),
    'NameConflict', /already has a volume named stash-recovery-tmp/);
  refused(planInitContainer(initInput({ repository: { ...designRepository, metadata: { name: 'stash-backup-repo', namespace: 'other' } } })), 'RepositoryNotMountable', /create the Repository and its Secret in namespace demo/);
});

test('the plans are idempotent: the same input gives an identical output', () => {
  assert.deepEqual(planRecoveryJob(jobInput()), planRecoveryJob(jobInput()));
  assert.equal(JSON.stringify(planRecoveryJob(jobInput({ recovery: databaseRecovery, agentTemplate: pgRecovery, appBinding: designAppBinding }))),
    JSON.stringify(planRecoveryJob(jobInput({ recovery: databaseRecovery, agentTemplate: pgRecovery, appBinding: designAppBinding }))));
  assert.equal(JSON.stringify(planInitContainer(initInput())), JSON.stringify(planInitContainer(initInput())));
});

test('hostReported / failedStatus / jobOutcome: a failed Job fails host-0 and the Recovery unless the agent reported', () => {
  const now = new Date('2026-11-26T10:00:00Z');
  assert.equal(hostReported({ status: undefined }), false);
  assert.equal(hostReported({ status: { phase: 'Running', recoveredHosts: [{ host: 'host-0', phase: 'Running' }] } }), false);
  assert.equal(hostReported({ status: { recoveredHosts: [{ host: 'host-0', phase: 'Succeeded' }] } }), true);
  assert.equal(hostReported({ status: { phase: 'Failed' } }), true);
  assert.deepEqual(failedStatus({ status: { phase: 'Running', recoveredHosts: [{ host: 'host-0', phase: 'Running', snapshotId: 'abcd1234' }] } }, 'Job x failed (DeadlineExceeded)', now), {
    phase: 'Failed', error: 'Job x failed (DeadlineExceeded)', completionTime: '2026-11-26T10:00:00Z',
    recoveredHosts: [{ host: 'host-0', phase: 'Failed', snapshotId: 'abcd1234', completionTime: '2026-11-26T10:00:00Z', error: 'Job x failed (DeadlineExceeded)' }],
  });
  const failed: V1Job = { metadata: { name: 'r-recovery' }, status: { conditions: [{ type: 'Failed', status: 'True', reason: 'DeadlineExceeded', message: 'Job was active longer than specified deadline', lastTransitionTime: now }] } };
  const outcome = jobOutcome(failed, now);
  assert.equal(outcome?.failed, true);
  assert.match(outcome?.error ?? '', /Job r-recovery failed \(DeadlineExceeded: Job was active longer than specified deadline\)/);
  assert.equal(jobOutcome({ metadata: { name: 'r' }, status: {} }, now), undefined);
});
