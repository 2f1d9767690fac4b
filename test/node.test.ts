/**
 * The test node (scripts/node.sh: containerd, runc, the CNI bridge, kube-scheduler, a kubelet,
 * kube-proxy and CoreDNS) runs real pods from the locally built images (scripts/images.ts). It assumes the node is up
 * (scripts/test.sh starts it after the control plane). What it shows:
 * - a pod of a namespace annotated with the node's toleration is scheduled there, runs the
 *   stash-agent image and Succeeds; its logs come through the apiserver from the kubelet;
 * - a pod of any other namespace stays Pending: the node's taint keeps it off;
 * - a pod reaches a TCP server on the host's loopback at the bridge's gateway address;
 * - hostPath, emptyDir and projected ServiceAccount token volumes are mounted;
 * - a pod resolves kubernetes.default.svc.cluster.local (CoreDNS) to the Service's ClusterIP and
 *   reaches the apiserver through it (kube-proxy) with its ServiceAccount token and CA;
 * - a pod reaches a host loopback server by the DNS name of a Service (hostService).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { AuthenticationV1Api, CoreV1Api, type V1Pod, type V1PodSpec } from '@kubernetes/client-node';
import { deleteNamespace, freshNamespace, useCluster, type Cluster } from './support/cluster.ts';
import { createPodWhenReady, hostService, NODE_NAME, NODE_TAINT_KEY, nodeNamespace } from './support/node.ts';
import { waitFor } from './support/wait.ts';

const nodeName = NODE_NAME;
const taintKey = NODE_TAINT_KEY;
const agentImage = 'stash-agent:0.1.0';

let cluster: Cluster;
let core: CoreV1Api;
let onNode: string; // a namespace whose pods tolerate the node's taint
let offNode: string; // a plain one
let gateway: string; // the node's InternalIP: the bridge's gateway address
let hostDir: string;

before(async () => {
  cluster = await useCluster();
  core = cluster.kc.makeApiClient(CoreV1Api);
  const node = await core.readNode({ name: nodeName }).catch((error: unknown) => {
    throw new Error(`no Node ${nodeName}: is the test node up? (KUBECONFIG=... scripts/node.sh up) ${String(error)}`);
  });
  const ready = node.status?.conditions?.find((c) => c.type === 'Ready')?.status;
  assert.equal(ready, 'True', `Node ${nodeName} is not Ready; see the logs in /tmp/stash-node (scripts/node.sh)`);
  gateway = node.status?.addresses?.find((a) => a.type === 'InternalIP')?.address ?? '';
  assert.match(gateway, /^\d+\.\d+\.\d+\.\d+$/, `Node ${nodeName} has no InternalIP`);

  onNode = await nodeNamespace(cluster, 'node-on');
  offNode = await freshNamespace(cluster, 'node-off');
  hostDir = mkdtempSync(path.join(tmpdir(), 'stash-node-test-'));
});

after(async () => {
  for (const ns of [onNode, offNode]) if (cluster && ns) await deleteNamespace(cluster, ns);
  if (hostDir) rmSync(hostDir, { recursive: true, force: true });
});

const createPod = (namespace: string, pod: V1Pod): Promise<V1Pod> => createPodWhenReady(cluster, namespace, pod);

/** Waits until the pod Succeeded and returns its logs (pods/log: apiserver -> kubelet). */
async function succeeded(namespace: string, name: string): Promise<{ pod: V1Pod; logs: string }> {
  let last: V1Pod | undefined;
  try {
    const pod = await waitFor(`pod ${namespace}/${name} to finish`, async () => {
      last = await core.readNamespacedPod({ namespace, name });
      return last.status?.phase === 'Succeeded' || last.status?.phase === 'Failed' ? last : undefined;
    }, 40_000);
    const logs = await core.readNamespacedPodLog({ namespace, name });
    assert.equal(pod.status?.phase, 'Succeeded', `pod ${name} failed; logs:\n${logs}\nstatus: ${JSON.stringify(pod.status)}`);
    return { pod, logs };
  } catch (error) {
    const events = await core.listNamespacedEvent({ namespace, fieldSelector: `involvedObject.name=${name}` });
    const said = events.items.map((e) => `${e.reason ?? ''}: ${e.message ?? ''}`).join('\n');
    throw new Error(`${String(error)}\nlast status: ${JSON.stringify(last?.status)}\nevents:\n${said}`, { cause: error });
  }
}

function agentPod(name: string, command: string[], extra: Partial<V1PodSpec> = {}, env: Record<string, string> = {}): V1Pod {
  return {
    metadata: { name },
    spec: {
      restartPolicy: 'Never',
      ...extra,
      containers: [{
        name: 'main',
        image: agentImage,
        imagePullPolicy: 'Never', // only what scripts/node.sh imported: no registry is reachable
        command,
        env: Object.entries(env).map(([key, value]) => ({ name: key, value })),
        volumeMounts: extra.volumes?.map((v) => ({ name: v.name, mountPath: `/mnt/${v.name}` })) ?? [],
      }],
    },
  };
}

test('a pod of an annotated namespace runs the stash-agent image on the node; its logs come from the kubelet', async () => {
  await createPod(onNode, agentPod('agent', ['stash', '--help']));
  const { pod, logs } = await succeeded(onNode, 'agent');
  assert.equal(pod.spec?.nodeName, nodeName);
  assert.ok(
    pod.spec?.tolerations?.some((t) => t.key === taintKey && t.operator === 'Exists' && t.effect === 'NoSchedule'),
    `PodTolerationRestriction gave the pod no toleration: ${JSON.stringify(pod.spec?.tolerations)}`,
  );
  assert.match(logs, /^stash: Stash's backup agent/m);
  assert.match(logs, /stash backup/);
  assert.equal(pod.status?.containerStatuses?.[0]?.state?.terminated?.exitCode, 0);
  assert.match(pod.status?.containerStatuses?.[0]?.imageID ?? '', /sha256:[0-9a-f]{64}/);
});

test('a pod of a namespace without the annotation stays Pending: the node is tainted', async () => {
  await createPod(offNode, agentPod('untolerated', ['stash', '--help']));
  const scheduled = await waitFor('the scheduler to give up on the untolerating pod', async () => {
    const pod = await core.readNamespacedPod({ namespace: offNode, name: 'untolerated' });
    return pod.status?.conditions?.find((c) => c.type === 'PodScheduled' && c.status === 'False');
  }, 20_000);
  assert.equal(scheduled.reason, 'Unschedulable');
  // (The scheduler's message does not name the taint: the node's only taint is ours.)
  assert.match(scheduled.message ?? '', /1 node\(s\) had untolerated taint/);
  const node = await core.readNode({ name: nodeName });
  assert.deepEqual(node.spec?.taints?.map((t) => `${t.key}=${t.value ?? ''}:${t.effect}`), [`${taintKey}=true:NoSchedule`]);
  const pod = await core.readNamespacedPod({ namespace: offNode, name: 'untolerated' });
  assert.equal(pod.status?.phase, 'Pending');
  assert.equal(pod.spec?.nodeName, undefined);
  assert.ok(!pod.spec?.tolerations?.some((t) => t.key === taintKey), JSON.stringify(pod.spec?.tolerations));
});

test('a pod reaches host loopback at the gateway, and mounts hostPath, emptyDir and a projected token', async () => {
  // A server on the host's loopback only, like every service the tests run.
  const server: Server = createServer((socket) => socket.end(`hello ${socket.remoteAddress ?? '?'}\n`));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const port = (server.address() as AddressInfo).port;
    writeFileSync(path.join(hostDir, 'from-host.txt'), 'written by the host\n');
    const script = `
      const fs = require('node:fs'), net = require('node:net');
      console.log('hostPath=' + fs.readFileSync('/mnt/host/from-host.txt', 'utf8').trim());
      fs.writeFileSync('/mnt/host/from-pod.txt', 'written by the pod\\n');
      fs.writeFileSync('/mnt/scratch/x', 'scratch');
      console.log('emptyDir=' + fs.readFileSync('/mnt/scratch/x', 'utf8'));
      console.log('token=' + fs.readFileSync('/mnt/token/token', 'utf8'));
      const socket = net.connect(Number(process.env.PORT), process.env.GATEWAY);
      let got = '';
      socket.on('data', (d) => { got += d; });
      socket.on('end', () => console.log('server=' + got.trim()));
      socket.on('error', (e) => { console.log('connect failed: ' + e.message); process.exit(1); });
    `;
    await createPod(onNode, agentPod('volumes-and-loopback', ['node', '-e', script], {
      volumes: [
        { name: 'host', hostPath: { path: hostDir, type: 'Directory' } },
        { name: 'scratch', emptyDir: {} },
        { name: 'token', projected: { sources: [{ serviceAccountToken: { path: 'token', audience: 'stash-node-test', expirationSeconds: 3600 } }] } },
      ],
    }, { GATEWAY: gateway, PORT: String(port) }));
    const { pod, logs } = await succeeded(onNode, 'volumes-and-loopback');
    const line = (key: string): string => new RegExp(`^${key}=(.*)$`, 'm').exec(logs)?.[1] ?? assert.fail(`no ${key}= line in:\n${logs}`);

    // The connection arrived from the pod's own address (DNAT keeps the source).
    assert.equal(line('server'), `hello ${pod.status?.podIP ?? '?'}`);
    assert.equal(line('hostPath'), 'written by the host');
    assert.equal(readFileSync(path.join(hostDir, 'from-pod.txt'), 'utf8'), 'written by the pod\n');
    assert.equal(line('emptyDir'), 'scratch');

    // The kubelet requested the token for this pod, with the volume's audience.
    const review = await cluster.kc.makeApiClient(AuthenticationV1Api).createTokenReview({
      body: { spec: { token: line('token'), audiences: ['stash-node-test'] } },
    });
    assert.equal(review.status?.authenticated, true, JSON.stringify(review.status));
    assert.equal(review.status?.user?.username, `system:serviceaccount:${onNode}:default`);
    assert.deepEqual(review.status?.user?.extra?.['authentication.kubernetes.io/pod-name'], ['volumes-and-loopback']);
  } finally {
    server.close();
  }
});

/** The `key=value` line of a pod's log. */
function logLine(logs: string, key: string): string {
  return new RegExp(`^${key}=(.*)$`, 'm').exec(logs)?.[1] ?? assert.fail(`no ${key}= line in:\n${logs}`);
}

test('a pod resolves kubernetes.default.svc.cluster.local and reaches the apiserver through the Service with its ServiceAccount', async () => {
  const script = `
    const fs = require('node:fs'), dns = require('node:dns/promises'), https = require('node:https');
    const sa = '/var/run/secrets/kubernetes.io/serviceaccount';
    const name = 'kubernetes.default.svc.cluster.local';
    const call = (method, path, body) => new Promise((resolve, reject) => {
      const req = https.request({ host: name, port: 443, method, path, ca: fs.readFileSync(sa + '/ca.crt'),
        headers: { authorization: 'Bearer ' + fs.readFileSync(sa + '/token', 'utf8'), 'content-type': 'application/json' } }, (res) => {
        let text = '';
        res.on('data', (d) => { text += d; });
        res.on('end', () => resolve(res.statusCode + ' ' + text.replace(/\\s+/g, ' ')));
      });
      req.on('error', reject);
      req.end(body);
    });
    (async () => {
      console.log('nameserver=' + /^nameserver (.*)$/m.exec(fs.readFileSync('/etc/resolv.conf', 'utf8'))[1]);
      console.log('address=' + (await dns.lookup(name, { family: 4 })).address);
      console.log('short=' + (await dns.lookup('kubernetes.default', { family: 4 })).address);
      console.log('version=' + await call('GET', '/version'));
      console.log('review=' + await call('POST', '/apis/authentication.k8s.io/v1/selfsubjectreviews',
        JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' })));
    })().catch((e) => { console.log('failed: ' + e.message); process.exit(1); });
  `;
  await createPod(onNode, agentPod('in-cluster', ['node', '-e', script]));
  const { logs } = await succeeded(onNode, 'in-cluster');
  const service = await core.readNamespacedService({ namespace: 'default', name: 'kubernetes' });
  assert.equal(logLine(logs, 'nameserver'), gateway, 'the kubelet gives pods CoreDNS on the gateway');
  assert.equal(logLine(logs, 'address'), service.spec?.clusterIP);
  assert.equal(logLine(logs, 'short'), service.spec?.clusterIP, 'the search list completes kubernetes.default');
  const version = logLine(logs, 'version');
  assert.match(version, /^200 /, version);
  assert.match(version, /"gitVersion": ?"v1\.\d+\.\d+/, version);
  const review = logLine(logs, 'review');
  assert.match(review, /^201 /, review);
  assert.match(review, new RegExp(`"username": ?"system:serviceaccount:${onNode}:default"`), review);
});

test('a pod reaches a host loopback server by the DNS name of a Service (hostService)', async () => {
  const server: Server = createServer((socket) => socket.end(`hello ${socket.remoteAddress ?? '?'}\n`));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const port = (server.address() as AddressInfo).port;
    const name = await hostService(cluster, onNode, 'host-echo', port);
    assert.equal(name, `host-echo.${onNode}.svc.cluster.local`);
    const script = `
      const dns = require('node:dns/promises'), net = require('node:net');
      (async () => {
        console.log('address=' + (await dns.lookup(process.env.NAME, { family: 4 })).address);
        console.log('short=' + (await dns.lookup('host-echo', { family: 4 })).address);
        const socket = net.connect(Number(process.env.PORT), process.env.NAME);
        let got = '';
        socket.on('data', (d) => { got += d; });
        socket.on('end', () => console.log('server=' + got.trim()));
        socket.on('error', (e) => { console.log('connect failed: ' + e.message); process.exit(1); });
      })().catch((e) => { console.log('failed: ' + e.message); process.exit(1); });
    `;
    await createPod(onNode, agentPod('by-name', ['node', '-e', script], {}, { NAME: name, PORT: String(port) }));
    const { pod, logs } = await succeeded(onNode, 'by-name');
    assert.equal(logLine(logs, 'address'), gateway);
    assert.equal(logLine(logs, 'short'), gateway, 'the search list completes the Service name in its namespace');
    assert.equal(logLine(logs, 'server'), `hello ${pod.status?.podIP ?? '?'}`);
  } finally {
    server.close();
  }
});
