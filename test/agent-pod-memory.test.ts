// The agent in a pod on the real node whose memory limit is too small for its backup: the kernel
// OOM-kills restic in the container's memory cgroup, and the agent says so (not "stopped by
// SIGKILL"), naming the limit and the field that raises it. The kill is real; restic is made to
// need more than the limit holds by running it with Go's collector off (GOGC=off, which restic
// passes on from the agent's environment) over 256 MB of incompressible data. (How much a real
// backup needs: scripts/bench/agent-pod.ts, docs/benchmarks.md.)
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { deleteNamespace, useCluster } from './support/cluster.ts';
import type { Cluster } from './support/cluster.ts';
import { containerStatus, createPodWhenReady, nodeNamespace, podEnded, podLog } from './support/node.ts';

let cluster: Cluster;
let ns: string;
let dir: string;

before(async () => {
  cluster = await useCluster();
  ns = await nodeNamespace(cluster, 'agent-oom');
  dir = mkdtempSync(path.join(os.tmpdir(), 'stash-agent-oom-'));
  mkdirSync(path.join(dir, 'data'));
  mkdirSync(path.join(dir, 'repo'));
  execFileSync('sh', ['-c', `head -c ${256 * 1024 * 1024} /dev/urandom > ${path.join(dir, 'data', 'random.bin')}`]);
  await cluster.kc.makeApiClient(CoreV1Api).createNamespacedSecret({ namespace: ns, body: { metadata: { name: 'repo' }, stringData: { password: 'oom-test' } } });
});

after(async () => {
  if (ns) await deleteNamespace(cluster, ns);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('restic OOM-killed in the container\'s memory cgroup: the agent fails naming the limit and containerAttributes.resources.limits.memory', { timeout: 240_000 }, async () => {
  const common = '--repo /repo --password-file /secret/password';
  await createPodWhenReady(cluster, ns, {
    metadata: { name: 'backup' },
    spec: {
      restartPolicy: 'Never',
      initContainers: [{
        name: 'init', image: 'stash-agent:0.1.0', imagePullPolicy: 'IfNotPresent', command: ['/bin/sh', '-c', `stash init ${common}`],
        volumeMounts: [{ name: 'repo', mountPath: '/repo' }, { name: 'secret', mountPath: '/secret' }],
      }],
      containers: [{
        name: 'backup', image: 'stash-agent:0.1.0', imagePullPolicy: 'IfNotPresent',
        command: ['/bin/sh', '-c', `stash backup ${common} --host oom /data`],
        env: [{ name: 'GOGC', value: 'off' }],
        resources: { limits: { memory: '192Mi' } },
        volumeMounts: [{ name: 'data', mountPath: '/data', readOnly: true }, { name: 'repo', mountPath: '/repo' }, { name: 'secret', mountPath: '/secret' }],
      }],
      volumes: [
        { name: 'data', hostPath: { path: path.join(dir, 'data'), type: 'Directory' } },
        { name: 'repo', hostPath: { path: path.join(dir, 'repo'), type: 'Directory' } },
        { name: 'secret', secret: { secretName: 'repo' } },
      ],
    },
  });
  const pod = await podEnded(cluster, ns, 'backup', 180_000);
  const log = await podLog(cluster, ns, 'backup', 'backup');
  assert.equal(pod.status?.phase, 'Failed', log);
  assert.equal(containerStatus(pod, 'init')?.state?.terminated?.exitCode, 0);
  assert.notEqual(containerStatus(pod, 'backup')?.state?.terminated?.exitCode, 0);
  assert.match(log, /restic backup on repository \/repo was killed by the kernel: the container ran out of memory \(its limit of 192Mi/);
  assert.match(log, /raise the memory limit of the agent's container \(a Backup's or Recovery's containerAttributes\.resources\.limits\.memory/);
  assert.doesNotMatch(log, /was stopped by SIGKILL/);
});
