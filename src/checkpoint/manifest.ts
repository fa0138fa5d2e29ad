/**
 * vm.json, the manifest of a VM folder (docs/vm-folder.md): the VM's config, its disk slots, the
 * disk graph (nodes: a file and its parent node), the checkpoint tree (each checkpoint names one node
 * per disk) and Now (its parent checkpoint and the leaf node of each disk, the only files written).
 *
 * It is input like any other file: parsed with a schema (valibot) on every read, then checked for
 * the rules a schema cannot say (references, cycles, Now's leaves), and every refusal names the JSON
 * path (`$.checkpoints[2].parent`) of what is wrong. Paths are relative to the VM folder, confined.
 */
import * as v from 'valibot';
import { DiskchainError } from '../io/errors.js';
import { MAX_CHAIN_DEPTH } from '../chain/open-chain.js';

export const MANIFEST_KIND = 'diskchain.vm';
export const MANIFEST_VERSION = 1;
/** Hyper-V's limit on checkpoint (and VM) names. */
export const MAX_NAME_LENGTH = 100;
export const MAX_DISKS = 64;
export const MAX_CHECKPOINTS = 4096;
export const MAX_NODES = 65536;

const GUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** A path relative to the VM folder that cannot leave it: no "..", ".", empty segments, absolute paths or backslashes. */
export function isConfinedRelative(path: string): boolean {
  if (path.length === 0 || path.length > 1024 || path.startsWith('/') || path.includes('\\') || path.includes('\0')) return false;
  return path.split('/').every((s) => s.length > 0 && s !== '.' && s !== '..');
}

const Guid = v.pipe(v.string(), v.regex(GUID_RE, 'expected a lowercase GUID like 0f8fad5b-d9cb-469f-a165-70867728950e'));
const RelPath = v.pipe(v.string(), v.check(isConfinedRelative, 'expected a path relative to the VM folder (no "..", no leading "/", no backslashes)'));
const Timestamp = v.pipe(v.string(), v.isoTimestamp('expected an ISO 8601 time like 2024-01-02T03:04:05.000Z'));
const Name = v.pipe(v.string(), v.minLength(1, 'a name cannot be empty'), v.maxLength(MAX_NAME_LENGTH, `a name has at most ${MAX_NAME_LENGTH} characters`));
const DiskId = v.pipe(v.string(), v.regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/, 'expected a disk id of letters, digits, "_" and "-" (at most 32)'));
/** File stems: what the VM's disk files are named after (`<stem>_<GUID>.avhdx`). */
const Stem = v.pipe(v.string(), v.regex(/^[^/\\\0]{1,100}$/, 'expected a file name stem without slashes'), v.check((s) => s !== '.' && s !== '..', 'expected a file name stem'));
const Count = (min: number, max: number) => v.pipe(v.number(), v.integer(), v.minValue(min), v.maxValue(max));

export const CHECKPOINT_TYPES = ['standard', 'production'] as const;
export const CHECKPOINT_SETTINGS = ['standard', 'production', 'productionOnly', 'disabled'] as const;

/** A host path (the kernel and initrd a VM boots live outside its folder): absolute, no NUL or newline. */
const HostPath = v.pipe(v.string(), v.maxLength(4096), v.startsWith('/', 'expected an absolute path'), v.check((s) => !/[\0\n]/.test(s), 'expected a path without NUL or newline'));

/** How the VM boots: the BIOS from its first disk, or a kernel (and initrd, command line) given to QEMU. */
export const BootSchema = v.variant('kind', [
  v.strictObject({ kind: v.literal('disk') }),
  v.strictObject({ kind: v.literal('kernel'), kernel: HostPath, initrd: v.optional(HostPath), append: v.optional(v.pipe(v.string(), v.maxLength(4096), v.check((s) => !/[\0\n]/.test(s), 'expected one line'))) }),
]);

export const VmConfigSchema = v.strictObject({
  memoryBytes: Count(1024 * 1024, 2 ** 44),
  cpus: Count(1, 1024),
  /** Hyper-V's checkpoint type setting: what `checkpoint create` takes by default. */
  checkpointType: v.picklist(CHECKPOINT_SETTINGS),
  /** Running VMs (docs/vm-runtime.md); absent: boot from the first disk. */
  boot: v.optional(BootSchema),
  /** The guest agent's virtio-serial port (production checkpoints freeze through it); absent: true. */
  guestAgent: v.optional(v.boolean()),
  /** Hyper-V's automatic checkpoints: one taken at start, removed at a clean shutdown; absent: false. */
  automaticCheckpoints: v.optional(v.boolean()),
  /** The worker warns when the VM folder's file system has less free than this; absent: 1 GiB. */
  freeSpaceReserveBytes: v.optional(Count(0, Number.MAX_SAFE_INTEGER)),
  /** QEMU's versioned machine type a saved state was taken on (a checkpoint's config records it). */
  machine: v.optional(v.pipe(v.string(), v.regex(/^[A-Za-z0-9._-]{1,64}$/, 'expected a QEMU machine type like pc-i440fx-7.2'))),
});

const DiskSlotSchema = v.strictObject({
  id: DiskId,
  stem: Stem,
  format: v.picklist(['vhdx', 'vhd', 'raw']),
});

const NodeSchema = v.strictObject({
  id: Guid,
  disk: DiskId,
  file: RelPath,
  parent: v.nullable(Guid),
});

const CheckpointSchema = v.strictObject({
  id: Guid,
  name: Name,
  created: Timestamp,
  type: v.picklist(CHECKPOINT_TYPES),
  parent: v.nullable(Guid),
  /** Checkpoints taken together of several VMs share a group id. */
  group: v.nullable(Guid),
  /** The node of each disk this checkpoint froze. */
  disks: v.record(DiskId, Guid),
  /** The VM's config at that instant (Snapshots/<id>/config.json). */
  config: RelPath,
  /** Memory and device state of a standard checkpoint of a running VM; null otherwise. */
  state: v.nullable(RelPath),
});

export const ManifestSchema = v.strictObject({
  kind: v.literal(MANIFEST_KIND),
  version: v.literal(MANIFEST_VERSION),
  id: Guid,
  name: Name,
  created: Timestamp,
  /** Incremented by every commit; a transaction record names the generation it started from. */
  generation: Count(1, Number.MAX_SAFE_INTEGER),
  /** The transaction whose commit wrote this generation. */
  transaction: v.nullable(Guid),
  config: VmConfigSchema,
  disks: v.pipe(v.array(DiskSlotSchema), v.minLength(1, 'a VM has at least one disk'), v.maxLength(MAX_DISKS)),
  nodes: v.pipe(v.array(NodeSchema), v.maxLength(MAX_NODES)),
  checkpoints: v.pipe(v.array(CheckpointSchema), v.maxLength(MAX_CHECKPOINTS)),
  now: v.strictObject({
    parent: v.nullable(Guid),
    disks: v.record(DiskId, Guid),
  }),
});

export type VmConfig = v.InferOutput<typeof VmConfigSchema>;
export type VmBoot = v.InferOutput<typeof BootSchema>;
export type DiskSlot = v.InferOutput<typeof DiskSlotSchema>;
export type DiskNode = v.InferOutput<typeof NodeSchema>;
export type Checkpoint = v.InferOutput<typeof CheckpointSchema>;
export type Manifest = v.InferOutput<typeof ManifestSchema>;
export type CheckpointType = (typeof CHECKPOINT_TYPES)[number];

/** A JSON path in the `$.a[1].b` notation. */
export function jsonPath(keys: Array<string | number>): string {
  return '$' + keys.map((k) => (typeof k === 'number' ? `[${k}]` : /^[A-Za-z_][A-Za-z0-9_]*$/.test(k) ? `.${k}` : `[${JSON.stringify(k)}]`)).join('');
}

function invalid(file: string, keys: Array<string | number>, message: string): DiskchainError {
  const path = jsonPath(keys);
  return new DiskchainError('MANIFEST_INVALID', `${path}: ${message}`, { file, path });
}

/** Parses with `schema`, or throws MANIFEST_INVALID naming the JSON path of the first problem. */
export function parseWith<S extends v.GenericSchema>(schema: S, value: unknown, file: string): v.InferOutput<S> {
  const result = v.safeParse(schema, value, { abortEarly: true });
  if (result.success) return result.output;
  const issue = result.issues[0];
  const keys = (issue.path ?? []).map((p) => p.key as string | number);
  const message = /^Invalid key: Expected never/.test(issue.message) ? 'unknown key (not in manifest version 1)' : /received undefined$/.test(issue.message) ? 'missing' : issue.message;
  throw invalid(file, keys, message);
}

/** Parses vm.json's text: JSON, then the schema (version first, so a newer manifest says so), then the rules. */
export function parseManifest(text: string, file: string): Manifest {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new DiskchainError('MANIFEST_INVALID', `not valid JSON (${e instanceof Error ? e.message : String(e)})`, { file, path: '$' });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new DiskchainError('MANIFEST_INVALID', `$: expected a JSON object, found ${Array.isArray(value) ? 'an array' : value === null ? 'null' : typeof value}`, { file, path: '$' });
  }
  {
    const version = (value as Record<string, unknown>).version;
    if (typeof version === 'number' && version > MANIFEST_VERSION && (value as Record<string, unknown>).kind === MANIFEST_KIND) {
      throw new DiskchainError('MANIFEST_INVALID', `$.version: written by a newer diskchain (manifest version ${version}); this one reads version ${MANIFEST_VERSION}`, { file, path: '$.version' });
    }
  }
  const manifest = parseWith(ManifestSchema, value, file);
  checkManifest(manifest, file);
  return manifest;
}

export function serializeManifest(m: Manifest): string {
  return `${JSON.stringify(m, null, 2)}\n`;
}

/**
 * The rules of a consistent manifest that the schema cannot express. Throws MANIFEST_INVALID with
 * the JSON path of the first broken rule.
 */
export function checkManifest(m: Manifest, file: string): void {
  const diskIds = new Set<string>();
  const stems = new Set<string>();
  m.disks.forEach((d, i) => {
    if (diskIds.has(d.id)) throw invalid(file, ['disks', i, 'id'], `disk id "${d.id}" is used twice`);
    if (stems.has(d.stem.toLowerCase())) throw invalid(file, ['disks', i, 'stem'], `disk stem "${d.stem}" is used twice`);
    diskIds.add(d.id);
    stems.add(d.stem.toLowerCase());
  });
  const nodes = new Map<string, DiskNode>();
  const files = new Set<string>();
  m.nodes.forEach((n, i) => {
    if (nodes.has(n.id)) throw invalid(file, ['nodes', i, 'id'], `node id ${n.id} is used twice`);
    if (!diskIds.has(n.disk)) throw invalid(file, ['nodes', i, 'disk'], `no disk has id "${n.disk}"`);
    if (files.has(n.file)) throw invalid(file, ['nodes', i, 'file'], `file "${n.file}" belongs to two nodes`);
    nodes.set(n.id, n);
    files.add(n.file);
  });
  const childCount = new Map<string, number>();
  m.nodes.forEach((n, i) => {
    if (n.parent === null) return;
    const parent = nodes.get(n.parent);
    if (!parent) throw invalid(file, ['nodes', i, 'parent'], `no node has id ${n.parent}`);
    if (parent.disk !== n.disk) throw invalid(file, ['nodes', i, 'parent'], `the parent node belongs to disk "${parent.disk}", this node to "${n.disk}"`);
    childCount.set(n.parent, (childCount.get(n.parent) ?? 0) + 1);
    // Cycles and depth: walk up from every node (bounded).
    let at: DiskNode | undefined = n;
    for (let depth = 0; at && at.parent !== null; depth++) {
      if (depth >= MAX_CHAIN_DEPTH) throw invalid(file, ['nodes', i, 'parent'], `the chain above this node is deeper than ${MAX_CHAIN_DEPTH} or has a cycle`);
      at = nodes.get(at.parent);
    }
  });
  const checkpoints = new Map<string, Checkpoint>();
  m.checkpoints.forEach((c, i) => {
    if (checkpoints.has(c.id)) throw invalid(file, ['checkpoints', i, 'id'], `checkpoint id ${c.id} is used twice`);
    checkpoints.set(c.id, c);
  });
  const referenced = new Map<string, string>();
  const sidecars = new Set<string>();
  const checkDisks = (disks: Record<string, string>, at: Array<string | number>): void => {
    for (const id of diskIds) if (!(id in disks)) throw invalid(file, [...at, 'disks'], `no node for disk "${id}"`);
    for (const [id, nodeId] of Object.entries(disks)) {
      if (!diskIds.has(id)) throw invalid(file, [...at, 'disks', id], `no disk has id "${id}"`);
      const node = nodes.get(nodeId);
      if (!node) throw invalid(file, [...at, 'disks', id], `no node has id ${nodeId}`);
      if (node.disk !== id) throw invalid(file, [...at, 'disks', id], `node ${nodeId} belongs to disk "${node.disk}"`);
    }
  };
  const isProperAncestor = (ancestor: string, of: string): boolean => {
    for (let at = nodes.get(of)?.parent ?? null; at !== null; at = nodes.get(at)?.parent ?? null) if (at === ancestor) return true;
    return false;
  };
  const checkParent = (parent: string | null, disks: Record<string, string>, at: Array<string | number>): void => {
    if (parent === null) return;
    const p = checkpoints.get(parent);
    if (!p) throw invalid(file, [...at, 'parent'], `no checkpoint has id ${parent}`);
    for (const [id, nodeId] of Object.entries(disks)) {
      if (!isProperAncestor(p.disks[id]!, nodeId)) throw invalid(file, [...at, 'disks', id], `node ${nodeId} does not derive from the parent checkpoint's node ${p.disks[id]}`);
    }
  };
  m.checkpoints.forEach((c, i) => {
    const at = ['checkpoints', i];
    checkDisks(c.disks, at);
    checkParent(c.parent, c.disks, at);
    // The tree has no cycle: walk up (bounded by the count).
    let up: Checkpoint | undefined = c;
    for (let n = 0; up && up.parent !== null; n++) {
      if (n > m.checkpoints.length) throw invalid(file, [...at, 'parent'], 'the checkpoint tree has a cycle');
      up = checkpoints.get(up.parent);
    }
    for (const [id, nodeId] of Object.entries(c.disks)) {
      if (referenced.has(nodeId)) throw invalid(file, [...at, 'disks', id], `node ${nodeId} is also the node of checkpoint ${referenced.get(nodeId)}`);
      referenced.set(nodeId, c.id);
    }
    for (const [key, path] of [['config', c.config], ['state', c.state]] as const) {
      if (path === null) continue;
      if (sidecars.has(path) || files.has(path)) throw invalid(file, [...at, key], `file "${path}" is used twice`);
      sidecars.add(path);
    }
  });
  checkDisks(m.now.disks, ['now']);
  checkParent(m.now.parent, m.now.disks, ['now']);
  for (const [id, nodeId] of Object.entries(m.now.disks)) {
    // Only Now's leaves are written: no checkpoint may freeze them and nothing may derive from them.
    if (referenced.has(nodeId)) throw invalid(file, ['now', 'disks', id], `Now's node ${nodeId} is frozen by checkpoint ${referenced.get(nodeId)}`);
    if (childCount.has(nodeId)) throw invalid(file, ['now', 'disks', id], `Now's node ${nodeId} has children; Now writes only leaves`);
  }
}
