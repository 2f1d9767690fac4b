/**
 * Typed database failures. Messages name the engine, the host:port and the fix; they never hold a
 * password (passwords travel only in the tools' environment).
 */

export class DatabaseError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The AppBinding, its Secret or the standalone flags do not describe a usable connection. */
export class DatabaseConfigError extends DatabaseError {}

/** The AppBinding's `spec.type` names an engine Stash has no dump/restore plan for. */
export class UnsupportedDatabaseError extends DatabaseError {}

/** A dump, restore or client binary is not on PATH. */
export class DatabaseToolNotFoundError extends DatabaseError {
  readonly tool: string;
  constructor(tool: string, message: string) {
    super(message);
    this.tool = tool;
  }
}

/** Nothing answers at host:port (refused, timed out, name not resolved). */
export class DatabaseUnreachableError extends DatabaseError {
  readonly address: string;
  constructor(address: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.address = address;
  }
}

/** The server answered but a query (login, listing databases) failed. */
export class DatabaseQueryError extends DatabaseError {}

/** The dump or its upload failed: restic recorded no snapshot. */
export class DatabaseBackupError extends DatabaseError {}

/** The snapshot stream or the restore tool failed, or the restored content did not verify. */
export class DatabaseRecoveryError extends DatabaseError {}
