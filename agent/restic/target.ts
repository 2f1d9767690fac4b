/**
 * Where restic finds a repository and how it authenticates: the contract between the backend
 * mapping (agent/backends) and the restic driver (agent/restic).
 *
 * Secrets live only in `env` and in `files` (written with mode 0600 to a private directory);
 * never in `repository` or `args`, which may be logged.
 */
export interface ResticTarget {
  /** restic's repository string, e.g. `s3:http://127.0.0.1:7070/bucket/prefix`; no credentials in it. */
  readonly repository: string;
  /** Environment for restic: RESTIC_PASSWORD, AWS_*, AZURE_*, ... */
  readonly env: Readonly<Record<string, string>>;
  /** Extra global flags that carry no secret, e.g. `--cacert <file>`, `-o sftp.command=...`. */
  readonly args: readonly string[];
  /** Files restic needs on disk (CA certificate, GCS credentials JSON, SSH key), written before it runs. */
  readonly files: readonly { readonly name: string; readonly content: string; readonly envVar?: string; readonly flag?: string }[];
}
