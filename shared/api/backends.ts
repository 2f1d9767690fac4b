// Storage backends of a Repository (and of a BackupTemplate): exactly one of them, plus the
// Secret holding restic's password and the backend's credentials.
import { z } from 'zod';
import { absolutePath, dnsSubdomainName, exactlyOne, hostPathSource, nfsSource, pvcSource, withRules } from './common.ts';

/** Object-store prefix: a relative path, may hold `${metadata.namespace}` / `${metadata.name}` in templates. */
export const PREFIX_PATTERN = '^([^/$]|\\$\\{metadata\\.(namespace|name)\\})([^$]|\\$\\{metadata\\.(namespace|name)\\})*$';
const prefix = () =>
  z.string().max(1024).regex(new RegExp(PREFIX_PATTERN), {
    error: (iss) => `prefix "${String(iss.input)}" must be a relative path (no leading "/"); the only placeholders are \${metadata.namespace} and \${metadata.name}`,
  }).optional();
const bucket = (what: string) => z.string().min(1, { error: `${what} must not be empty` }).max(255);

export const BACKEND_KEYS = ['local', 's3', 'gcs', 'azure', 'b2', 'swift', 'sftp', 'rest'] as const;
export type BackendKind = (typeof BACKEND_KEYS)[number];

export const localBackend = withRules(z.strictObject({
  mountPath: absolutePath('local.mountPath'),
  subPath: z.string().regex(/^[^/]/, { error: 'subPath must be a relative path' }).optional(),
  hostPath: hostPathSource.optional(),
  persistentVolumeClaim: pvcSource.optional(),
  nfs: nfsSource.optional(),
}), [exactlyOne(['hostPath', 'persistentVolumeClaim', 'nfs'], 'volume source of the local backend')],
'a volume mounted into the agent at mountPath; the restic repository lives at mountPath/subPath');

export const s3Backend = z.strictObject({
  endpoint: z.string().min(1).meta({ description: 'e.g. s3.amazonaws.com or https://minio.example:9000' }),
  bucket: bucket('s3.bucket'),
  prefix: prefix(),
  region: z.string().optional(),
});
export const gcsBackend = z.strictObject({ bucket: bucket('gcs.bucket'), prefix: prefix() });
export const azureBackend = z.strictObject({ container: bucket('azure.container'), prefix: prefix() });
export const b2Backend = z.strictObject({ bucket: bucket('b2.bucket'), prefix: prefix() });
export const swiftBackend = z.strictObject({ container: bucket('swift.container'), prefix: prefix() });
export const sftpBackend = z.strictObject({
  host: z.string().min(1),
  port: z.int().min(1).max(65535).optional(),
  user: z.string().min(1),
  path: z.string().min(1),
});
export const restBackend = z.strictObject({
  url: z.string().regex(/^https?:\/\/[^\s]+$/, { error: 'rest.url must be an http:// or https:// URL' }),
});

/**
 * `spec.backend`: one backend key plus `storageSecretName`, the Secret (same namespace) that holds
 * RESTIC_PASSWORD and the backend's credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
 * GOOGLE_PROJECT_ID/GOOGLE_SERVICE_ACCOUNT_JSON_KEY, AZURE_ACCOUNT_NAME/AZURE_ACCOUNT_KEY,
 * B2_ACCOUNT_ID/B2_ACCOUNT_KEY, OS_* / ST_*, SSH key for sftp) and optionally CA_CERT_DATA, a PEM
 * bundle passed to restic as `--cacert` for endpoints signed by a private CA. Secret values never
 * appear in a status, an Event or a log.
 */
export const backend = withRules(z.strictObject({
  local: localBackend.optional(),
  s3: s3Backend.optional(),
  gcs: gcsBackend.optional(),
  azure: azureBackend.optional(),
  b2: b2Backend.optional(),
  swift: swiftBackend.optional(),
  sftp: sftpBackend.optional(),
  rest: restBackend.optional(),
  storageSecretName: dnsSubdomainName('storageSecretName')
    .meta({ description: 'Secret with RESTIC_PASSWORD, the backend credentials and optionally CA_CERT_DATA' }),
}), [exactlyOne([...BACKEND_KEYS], 'backend')], 'where the restic repository lives: exactly one backend');
export type Backend = z.infer<typeof backend>;

/** Which backend a (validated) Backend uses. */
export function backendKind(b: Backend): BackendKind {
  for (const key of BACKEND_KEYS) if (b[key] !== undefined) return key;
  throw new Error('backend has no backend key: set exactly one of ' + BACKEND_KEYS.join(', '));
}
