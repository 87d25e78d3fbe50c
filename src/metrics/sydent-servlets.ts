/**
 * Sydent's `sydent_http_received_requests` counter labels requests with the Python class of the servlet that
 * answered (sydent/http/httpserver.py) and the method as Python printed bytes (`b'GET'`). The same labels here,
 * so dashboards and alerts written for Sydent keep working after the switch.
 */

/** Our route pattern, below the API prefix, → Sydent's servlet class. */
const BELOW_PREFIX: Readonly<Record<string, string>> = {
  '': 'CorsServlet',
  '/validate/email/requestToken': 'EmailRequestCodeServlet',
  '/validate/email/submitToken': 'EmailValidateCodeServlet',
  '/validate/msisdn/requestToken': 'MsisdnRequestCodeServlet',
  '/validate/msisdn/submitToken': 'MsisdnValidateCodeServlet',
  '/lookup': 'LookupServlet',
  '/bulk_lookup': 'BulkLookupServlet',
  '/pubkey/isvalid': 'PubkeyIsValidServlet',
  '/pubkey/:keyId': 'Ed25519Servlet',
  '/pubkey/ephemeral/isvalid': 'EphemeralPubkeyIsValidServlet',
  '/3pid/getValidated3pid': 'GetValidated3pidServlet',
  '/3pid/bind': 'ThreePidBindServlet',
  '/3pid/unbind': 'ThreePidUnbindServlet',
  '/store-invite': 'StoreInviteServlet',
  '/sign-ed25519': 'BlindlySignStuffServlet',
  '/terms': 'TermsServlet',
  '/account': 'AccountServlet',
  '/account/register': 'RegisterServlet',
  '/account/logout': 'LogoutServlet',
  '/hash_details': 'HashDetailsServlet',
};

/** Routes outside the two API prefixes. */
const OTHERS: Readonly<Record<string, string>> = {
  '/_matrix/identity/versions': 'VersionsServlet',
  '/_matrix/identity/internal/bind': 'AuthenticatedBindThreePidServlet',
  '/_matrix/identity/internal/unbind': 'AuthenticatedUnbindThreePidServlet',
  '/_matrix/identity/replicate/v1/push': 'ReplicationPushServlet',
};

const PREFIXES = ['/_matrix/identity/v2', '/_matrix/identity/api/v1'] as const;

/** Sydent's servlet for one of our route patterns; null for routes Sydent does not have (debug, health). */
export function sydentServlet(route: string): string | null {
  const other = OTHERS[route];
  if (other !== undefined) return other;
  for (const prefix of PREFIXES) {
    if (route === prefix || route.startsWith(`${prefix}/`)) {
      const below = route.slice(prefix.length);
      // v2's lookup is LookupV2Servlet; v1's the older LookupServlet
      if (below === '/lookup' && prefix === PREFIXES[0]) return 'LookupV2Servlet';
      return BELOW_PREFIX[below] ?? null;
    }
  }
  return null;
}

/** The method label as Sydent's Twisted request gave it: Python's repr of bytes. */
export function sydentMethod(method: string): string {
  return `b'${method}'`;
}
