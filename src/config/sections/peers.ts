import { PEER_SECTION_PREFIX } from '../known-keys.js';
import type { IniReader } from '../ini.js';
import type { PeerConfig } from '../types.js';
import { SectionValues } from '../values.js';
import type { BuildContext } from './context.js';
import { isHttpUrl } from './http.js';

/**
 * The most `[peer.NAME] push_batch_size` may ask for: a sydent-ts peer takes pushes of up to 4 MiB (about 9,000
 * associations); a Sydent peer aborts any body over 512 KiB, so its section keeps Sydent's 100.
 */
export const MAX_PUSH_BATCH_SIZE = 5_000;

/**
 * `[peer.NAME] base_replication_url` overrides the `https://NAME:<port>` Sydent would otherwise push to;
 * `push_batch_size` (ours: Sydent ignores it) sends larger batches to a peer that is sydent-ts, which nothing in the
 * protocol tells us.
 */
export function readPeers(ini: IniReader, ctx: BuildContext): Record<string, PeerConfig> {
  // fromEntries so that a peer called __proto__ stays an ordinary key
  const peers: [string, PeerConfig][] = [];
  for (const section of ini.sectionNames()) {
    if (!section.startsWith(PEER_SECTION_PREFIX)) continue;
    const name = section.slice(PEER_SECTION_PREFIX.length);
    const v = new SectionValues(ini, section, ctx.cwd);
    const url = v.str('base_replication_url');
    const batch = v.str('push_batch_size');
    if (name === '' || (url === '' && batch === '')) {
      ctx.warn(
        `config: [${section}] ignored: it needs a peer name in the header and a base_replication_url or push_batch_size`,
      );
      continue;
    }
    if (url !== '' && !isHttpUrl(url)) v.fail('base_replication_url', 'not an absolute http:// or https:// URL');
    const pushBatchSize = batch === '' ? undefined : v.int('push_batch_size', 1);
    if (pushBatchSize !== undefined && pushBatchSize > MAX_PUSH_BATCH_SIZE) {
      v.fail('push_batch_size', `more than ${MAX_PUSH_BATCH_SIZE} associations per push`);
    }
    peers.push([
      name,
      { ...(url !== '' ? { baseReplicationUrl: url } : {}), ...(pushBatchSize !== undefined ? { pushBatchSize } : {}) },
    ]);
  }
  return Object.fromEntries(peers);
}
