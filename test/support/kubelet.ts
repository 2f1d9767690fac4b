/**
 * A stand-in for the kubelet: the test control plane has no kubelet and no container runtime, so
 * this runs one container of a real Pod object (as the controllers created it) as a local
 * process, the way the kubelet would:
 * - env resolved as Kubernetes does: `value` with $(VAR) expansion, `fieldRef`, `secretKeyRef`,
 *   `configMapKeyRef`;
 * - every volumeMount bind-mounted at its mountPath inside a private mount namespace
 *   (`unshare -m`, needs root): hostPath, emptyDir, secret, configMap, persistentVolumeClaim
 *   (a directory per claim) and projected ServiceAccount tokens (a real TokenRequest bound to the
 *   Pod, with the volume's audience);
 * - the container's command and args, with $(VAR) expansion; the Stash agent image runs the
 *   agent from this repository.
 * What it cannot do is stated by `envOverrides`: cluster DNS and Service routing do not exist
 * here, so a test names the loopback address that stands for a Service.
 */
import { spawn } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import type { V1Container, V1EnvVar, V1Pod, V1Volume } from '@kubernetes/client-node';
import type { Cluster } from './cluster.ts';
import { repoRoot, toolPath } from './tools.ts';

export interface ContainerRun {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunContainerOptions {
  readonly cluster: Cluster;
  readonly pod: V1Pod;
  readonly containerName: string;
  /** Where emptyDirs, Secret files and claim directories are made (kept for the pod's next containers; the caller removes it). */
  readonly stateDir: string;
  /** claimName -> host directory backing that PersistentVolumeClaim. */
  readonly claims?: Readonly<Record<string, string>>;
  /** Env values that stand for cluster DNS / Service routing, applied after resolution. */
  readonly envOverrides?: Readonly<Record<string, string>>;
  readonly signal?: AbortSignal;
  readonly timeoutMs?: number;
}

export class KubeletStandInError extends Error {
  override name = 'KubeletStandInError';
}

/** Expands $(VAR) references as Kubernetes does: known names are replaced, $$ escapes, others stay. */
export function expandReferences(text: string, vars: ReadonlyMap<string, string>): string {
  return text.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (match, name: string | undefined) => {
    if (match === '$$') return '$';
    return name !== undefined && vars.has(name) ? (vars.get(name) ?? '') : match;
  });
}

/** The value of a `fieldRef` fieldPath on a pod. */
export function podField(pod: V1Pod, fieldPath: string): string {
  const label = /^metadata\.labels\['(.+)'\]$/.exec(fieldPath);
  if (label?.[1] !== undefined) return pod.metadata?.labels?.[label[1]] ?? '';
  const annotation = /^metadata\.annotations\['(.+)'\]$/.exec(fieldPath);
  if (annotation?.[1] !== undefined) return pod.metadata?.annotations?.[annotation[1]] ?? '';
  switch (fieldPath) {
    case 'metadata.name': return pod.metadata?.name ?? '';
    case 'metadata.namespace': return pod.metadata?.namespace ?? '';
    case 'metadata.uid': return pod.metadata?.uid ?? '';
    case 'spec.nodeName': return pod.spec?.nodeName ?? '';
    case 'spec.serviceAccountName': return pod.spec?.serviceAccountName ?? 'default';
    case 'status.podIP': return '127.0.0.1';
    case 'status.hostIP': return '127.0.0.1';
    default: throw new KubeletStandInError(`fieldRef ${fieldPath} is not supported by the kubelet stand-in`);
  }
}

async function resolveEnv(core: CoreV1Api, pod: V1Pod, env: readonly V1EnvVar[]): Promise<Map<string, string>> {
  const namespace = pod.metadata?.namespace ?? 'default';
  const vars = new Map<string, string>();
  for (const e of env) {
    if (e.valueFrom === undefined) {
      vars.set(e.name, expandReferences(e.value ?? '', vars));
    } else if (e.valueFrom.fieldRef) {
      vars.set(e.name, podField(pod, e.valueFrom.fieldRef.fieldPath));
    } else if (e.valueFrom.secretKeyRef) {
      const ref = e.valueFrom.secretKeyRef;
      const secret = await core.readNamespacedSecret({ name: ref.name ?? '', namespace });
      const data = secret.data?.[ref.key];
      if (data === undefined) {
        if (ref.optional === true) continue;
        throw new KubeletStandInError(`env ${e.name}: Secret ${namespace}/${ref.name ?? ''} has no key ${ref.key} (the kubelet would not start the container)`);
      }
      vars.set(e.name, Buffer.from(data, 'base64').toString('utf8'));
    } else if (e.valueFrom.configMapKeyRef) {
      const ref = e.valueFrom.configMapKeyRef;
      const cm = await core.readNamespacedConfigMap({ name: ref.name ?? '', namespace });
      const value = cm.data?.[ref.key];
      if (value === undefined) {
        if (ref.optional === true) continue;
        throw new KubeletStandInError(`env ${e.name}: ConfigMap ${namespace}/${ref.name ?? ''} has no key ${ref.key}`);
      }
      vars.set(e.name, value);
    } else {
      throw new KubeletStandInError(`env ${e.name}: this valueFrom is not supported by the kubelet stand-in`);
    }
  }
  return vars;
}

/** Writes a volume's content to a host directory and returns it. */
async function materialiseVolume(core: CoreV1Api, pod: V1Pod, volume: V1Volume, options: RunContainerOptions): Promise<string> {
  const namespace = pod.metadata?.namespace ?? 'default';
  const podDir = path.join(options.stateDir, pod.metadata?.uid ?? 'pod');
  if (volume.hostPath) return volume.hostPath.path;
  if (volume.persistentVolumeClaim) {
    const claim = volume.persistentVolumeClaim.claimName;
    const dir = options.claims?.[claim] ?? path.join(options.stateDir, 'claims', namespace, claim);
    mkdirSync(dir, { recursive: true });
    return dir;
  }
  const dir = path.join(podDir, 'volumes', volume.name);
  mkdirSync(dir, { recursive: true });
  if (volume.emptyDir) return dir;
  if (volume.secret) {
    const secret = await core.readNamespacedSecret({ name: volume.secret.secretName ?? '', namespace });
    const mode = volume.secret.defaultMode ?? 0o644;
    const items = volume.secret.items ?? Object.keys(secret.data ?? {}).map((key) => ({ key, path: key }));
    for (const item of items) {
      const data = secret.data?.[item.key];
      if (data === undefined) throw new KubeletStandInError(`volume ${volume.name}: Secret ${namespace}/${volume.secret.secretName ?? ''} has no key ${item.key}`);
      writeFileSync(path.join(dir, item.path), Buffer.from(data, 'base64'), { mode });
    }
    return dir;
  }
  if (volume.configMap) {
    const cm = await core.readNamespacedConfigMap({ name: volume.configMap.name ?? '', namespace });
    for (const [key, value] of Object.entries(cm.data ?? {})) writeFileSync(path.join(dir, key), value);
    return dir;
  }
  if (volume.projected) {
    for (const source of volume.projected.sources ?? []) {
      if (source.serviceAccountToken) {
        const sat = source.serviceAccountToken;
        const request = await core.createNamespacedServiceAccountToken({
          name: pod.spec?.serviceAccountName ?? 'default',
          namespace,
          body: {
            apiVersion: 'authentication.k8s.io/v1',
            kind: 'TokenRequest',
            spec: {
              audiences: sat.audience !== undefined ? [sat.audience] : [],
              expirationSeconds: sat.expirationSeconds ?? 3600,
              boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: pod.metadata?.name ?? '', uid: pod.metadata?.uid ?? '' },
            },
          },
        });
        writeFileSync(path.join(dir, sat.path), request.status?.token ?? '', { mode: 0o600 });
      } else if (source.configMap) {
        // e.g. kube-root-ca.crt in the kube-api-access-* volume the ServiceAccount admission adds.
        const cm = await core.readNamespacedConfigMap({ name: source.configMap.name ?? '', namespace });
        const items = source.configMap.items ?? Object.keys(cm.data ?? {}).map((key) => ({ key, path: key }));
        for (const item of items) {
          const value = cm.data?.[item.key];
          if (value === undefined) {
            if (source.configMap.optional === true) continue;
            throw new KubeletStandInError(`volume ${volume.name}: ConfigMap ${namespace}/${source.configMap.name ?? ''} has no key ${item.key}`);
          }
          mkdirSync(path.dirname(path.join(dir, item.path)), { recursive: true });
          writeFileSync(path.join(dir, item.path), value);
        }
      } else if (source.downwardAPI) {
        for (const item of source.downwardAPI.items ?? []) {
          if (!item.fieldRef) throw new KubeletStandInError(`volume ${volume.name}: downwardAPI item ${item.path} has no fieldRef; only fieldRef items are supported by the kubelet stand-in`);
          mkdirSync(path.dirname(path.join(dir, item.path)), { recursive: true });
          writeFileSync(path.join(dir, item.path), podField(pod, item.fieldRef.fieldPath));
        }
      } else {
        throw new KubeletStandInError(`volume ${volume.name}: only serviceAccountToken, configMap and downwardAPI projections are supported by the kubelet stand-in`);
      }
    }
    return dir;
  }
  throw new KubeletStandInError(`volume ${volume.name}: this volume source is not supported by the kubelet stand-in`);
}

/** The program a container image stands for: the Stash agent image runs this repository's agent. */
export function programFor(container: V1Container, vars: ReadonlyMap<string, string>): string[] {
  const command = (container.command ?? []).map((c) => expandReferences(c, vars));
  const args = (container.args ?? []).map((a) => expandReferences(a, vars));
  const image = container.image ?? '';
  const isAgent = /(^|\/)stash-agent(:|$)/.test(image) || /(^|\/)stash(:|$)/.test(image);
  if (!isAgent) throw new KubeletStandInError(`container ${container.name}: image ${image} has no local stand-in (only the Stash agent image)`);
  const agent = [process.execPath, path.join(repoRoot, 'agent/bin/stash.js')];
  if (command.length === 0 || command[0] === 'stash' || command[0] === '/stash') return [...agent, ...command.slice(1), ...args];
  throw new KubeletStandInError(`container ${container.name}: command ${command[0] ?? ''} is not the agent's entrypoint`);
}

const shellQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/** Runs one container of `pod` to completion and returns its exit code and output. */
export async function runContainer(options: RunContainerOptions): Promise<ContainerRun> {
  const { pod, containerName } = options;
  const containers = [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])];
  const container = containers.find((c) => c.name === containerName);
  if (!container) throw new KubeletStandInError(`pod ${pod.metadata?.name ?? ''} has no container ${containerName}`);
  const core = options.cluster.kc.makeApiClient(CoreV1Api);
  const vars = await resolveEnv(core, pod, container.env ?? []);
  for (const [name, value] of Object.entries(options.envOverrides ?? {})) vars.set(name, value);

  mkdirSync(options.stateDir, { recursive: true });
  // Sources are bound to a staging directory first, so a mount over e.g. /tmp cannot hide a source
  // below /tmp; the staging directory itself must therefore lie outside every mount target.
  const targets = (container.volumeMounts ?? []).map((m) => m.mountPath);
  const below = (dir: string, root: string): boolean => dir === root || dir.startsWith(root.endsWith('/') ? root : `${root}/`);
  const stagingBase = [options.stateDir, '/run/stash-kubelet', '/var/lib/stash-kubelet'].map((d) => path.resolve(d)).find((d) => !targets.some((t) => below(d, t)));
  if (stagingBase === undefined) throw new KubeletStandInError(`container ${containerName}: its mounts (${targets.join(', ')}) cover every staging directory the stand-in can use`);
  mkdirSync(stagingBase, { recursive: true });
  const staging = mkdtempSync(path.join(stagingBase, 'mnt-'));
  const volumes = new Map((pod.spec?.volumes ?? []).map((v) => [v.name, v]));
  const mounts: { source: string; target: string; readOnly: boolean }[] = [];
  for (const mount of container.volumeMounts ?? []) {
    const volume = volumes.get(mount.name);
    if (!volume) throw new KubeletStandInError(`container ${containerName}: volumeMount ${mount.name} names no volume of the pod`);
    const root = await materialiseVolume(core, pod, volume, options);
    const source = mount.subPath ? path.join(root, mount.subPath) : root;
    if (!existsSync(source)) mkdirSync(source, { recursive: true });
    mounts.push({ source, target: mount.mountPath, readOnly: mount.readOnly === true });
  }
  const script: string[] = ['set -e'];
  mounts.forEach((m, i) => script.push(`mkdir -p ${shellQuote(`${staging}/${i}`)} && mount --bind ${shellQuote(m.source)} ${shellQuote(`${staging}/${i}`)}`));
  const ordered = mounts.map((m, i) => ({ ...m, i })).sort((a, b) => a.target.split('/').length - b.target.split('/').length);
  for (const m of ordered) {
    script.push(`mkdir -p ${shellQuote(m.target)} && mount --bind ${shellQuote(`${staging}/${m.i}`)} ${shellQuote(m.target)}`);
    if (m.readOnly) script.push(`mount -o remount,bind,ro ${shellQuote(m.target)}`);
  }
  // "The image": this repository (the agent and Node 24) and restic, bound into staging before the
  // pod's mounts, so a mount over their location (e.g. an emptyDir at /tmp over a clone in /tmp)
  // cannot hide them.
  const image = `${staging}/image`;
  const resticDir = path.dirname(toolPath('restic'));
  script.splice(1, 0,
    `mkdir -p ${shellQuote(`${image}/repo`)} ${shellQuote(`${image}/bin`)}`,
    `mount --bind ${shellQuote(repoRoot)} ${shellQuote(`${image}/repo`)}`,
    `mount --bind ${shellQuote(resticDir)} ${shellQuote(`${image}/bin`)}`);
  const inImage = (p: string): string => (p === repoRoot || p.startsWith(`${repoRoot}/`) ? `${image}/repo${p.slice(repoRoot.length)}` : p);
  const program = programFor(container, vars).map(inImage);
  script.push(`exec ${program.map(shellQuote).join(' ')}`);

  const env: Record<string, string> = {
    PATH: `${image}/bin:${image}/repo/node_modules/.bin:${process.env.PATH ?? ''}`,
    HOME: '/root',
    STASH_RESTIC: `${image}/bin/${path.basename(toolPath('restic'))}`,
    ...Object.fromEntries(vars),
  };
  try {
    return await new Promise<ContainerRun>((resolve, reject) => {
      const child = spawn('unshare', ['-m', '--propagation', 'private', 'bash', '-c', script.join('\n')], {
        env, stdio: ['ignore', 'pipe', 'pipe'], signal: options.signal, timeout: options.timeoutMs ?? 300_000,
      });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
      child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
      // An aborted signal kills the container (SIGTERM, as the kubelet stops a container) and emits
      // an AbortError: the run still ends with the process's exit, reported like any other.
      child.on('error', (error) => { if (error.name !== 'AbortError') reject(error); });
      child.on('close', (code, signal) => resolve({ exitCode: code ?? (signal ? 128 + (osConstants.signals[signal] ?? 0) : 1), stdout, stderr }));
    });
  } finally {
    // The pod's volumes (emptyDirs, Secret files) live as long as the pod, as with a kubelet: the
    // next container of the same pod sees them; the caller removes stateDir. Mount points made on
    // the host stay too: removing one would unmount it in every other running container's namespace.
    rmSync(staging, { recursive: true, force: true });
  }
}
