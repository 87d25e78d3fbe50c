import { PEER_SECTION_PREFIX } from '../known-keys.js';
import type { IniReader } from '../ini.js';
import type { PeerConfig } from '../types.js';
import { SectionValues } from '../values.js';
import type { BuildContext } from './context.js';
import { isHttpUrl } from './http.js';

/** `[peer.NAME] base_replication_url` overrides the `https://NAME:<port>` Sydent would otherwise push to. */
export function readPeers(ini: IniReader, ctx: BuildContext): Record<string, PeerConfig> {
  // fromEntries so that a peer called __proto__ stays an ordinary key
  const peers: [string, PeerConfig][] = [];
  for (const section of ini.sectionNames()) {
    if (!section.startsWith(PEER_SECTION_PREFIX)) continue;
    const name = section.slice(PEER_SECTION_PREFIX.length);
    const v = new SectionValues(ini, section, ctx.cwd);
    const url = v.str('base_replication_url');
    if (name === '' || url === '') {
      ctx.warn(`config: [${section}] ignored: it needs a peer name in the header and a base_replication_url`);
      continue;
    }
    if (!isHttpUrl(url)) v.fail('base_replication_url', 'not an absolute http:// or https:// URL');
    peers.push([name, { baseReplicationUrl: url }]);
  }
  return Object.fromEntries(peers);
}
