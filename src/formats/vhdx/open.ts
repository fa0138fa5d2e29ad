import type { ByteSource } from '../../io/byte-source.js';
import { NULL_GUID, randomGuid } from '../../io/guid.js';
import { OverlaySource } from '../../io/overlay-source.js';
import type { OpenOptions } from '../types.js';
import { VhdxDisk, type VhdxSessionOptions } from './disk.js';
import { HeaderWriter } from './header-writer.js';
import { readHeaders, readLayout } from './layout.js';
import { applyReplay, assertReplayWithin, replayBound } from './log-apply.js';
import { planReplay } from './log-replay.js';
import { normalizeGuid } from './parent-link.js';

/**
 * Opens a VHDX file. A dirty log (§2.3.3) is replayed first: into the file when writable
 * (new FileWriteGuid first, LogGuid cleared after), or in memory when read-only (the file is untouched).
 * `dataWriteGuid` (writable opens) is the DataWriteGuid the session's first data change sets.
 */
export async function openVhdx(source: ByteSource, options: OpenOptions = {}): Promise<VhdxDisk> {
  const session: VhdxSessionOptions = options.dataWriteGuid === undefined ? {} : { dataWriteGuid: normalizeGuid(options.dataWriteGuid, 'dataWriteGuid', source.name) };
  const { creator, current } = await readHeaders(source);
  const { logGuid, logOffset, logLength } = current.header;
  if (logGuid === NULL_GUID) {
    const layout = await readLayout(source, creator, current);
    return new VhdxDisk(source, layout, await source.size(), { logReplay: 'not needed' }, options.writable ? session : {});
  }
  const plan = await planReplay(source, logOffset, logLength, logGuid);
  const notes = { logReplay: plan ? `${plan.entryCount} entries up to sequence ${plan.headSequence}` : 'LogGuid set but no entry carries it: nothing to replay' };
  const size = await source.size();
  // The file as the replay leaves it, seen before anything is written; the plan is bounded by it (log-apply.ts).
  const view = plan ? new OverlaySource(source, plan.writes, Math.max(size, plan.minimumFileSize)) : source;
  const replayed = await readLayout(view, creator, current);
  if (plan) assertReplayWithin(plan, replayBound(replayed, size), source.name, logOffset);
  if (!options.writable) return new VhdxDisk(view, replayed, await view.size(), { ...notes, logReplayedIn: 'memory (file unchanged)' });
  const headers = new HeaderWriter(source, current);
  // §2.2.2: replay is a change to the file (new FileWriteGuid) but not to the disk's contents: the
  // session that wrote the log changed DataWriteGuid before any data change it logged.
  await headers.update({ fileWriteGuid: randomGuid() });
  if (plan) {
    await applyReplay(source, plan, size);
    await source.flush();
  }
  await headers.update({ logGuid: NULL_GUID });
  const layout = await readLayout(source, creator, headers.state);
  return new VhdxDisk(source, layout, await source.size(), { ...notes, logReplayedIn: 'file' }, session);
}
