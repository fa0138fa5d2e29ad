import type { ByteSource } from '../../io/byte-source.js';
import { encodeHeader, HEADER_OFFSETS, type VhdxHeader } from './header.js';
import type { CurrentHeader } from './layout.js';

/**
 * §2.2.2.1 Header updates: write the non-current slot with SequenceNumber + 1 and flush; done twice
 * so that both copies carry the new values.
 */
export class HeaderWriter {
  constructor(
    private readonly source: ByteSource,
    private current: CurrentHeader,
  ) {}

  get state(): CurrentHeader {
    return this.current;
  }

  get header(): VhdxHeader {
    return this.current.header;
  }

  async update(changes: Partial<Pick<VhdxHeader, 'fileWriteGuid' | 'dataWriteGuid' | 'logGuid'>>): Promise<void> {
    for (let i = 0; i < 2; i++) {
      const slot: 0 | 1 = this.current.slot === 0 ? 1 : 0;
      const header: VhdxHeader = { ...this.current.header, ...changes, sequenceNumber: this.current.header.sequenceNumber + 1n };
      await this.source.write(encodeHeader(header), HEADER_OFFSETS[slot]);
      await this.source.flush();
      this.current = { slot, header };
    }
  }
}
