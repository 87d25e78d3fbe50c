/**
 * Third-party invites (store-invite): a homeserver invites an email address that is not on Matrix yet. The flow,
 * run by the sessions supervisor once the route has checked the request: the sender's rate limit, the address not
 * bound already, then the invite and a fresh ephemeral key pair are stored and the invitation is mailed (taken back
 * when the mail cannot be sent). The token and the key's private half travel only in that mail.
 */
import type { CallOptions } from '../actors/ask.js';
import type { Facades } from '../actors/facade.js';
import type { Clock } from '../clock.js';
import type { SydentConfig } from '../config/types.js';
import { encodeBase64Url, generateSeed, LETTERS, publicKeyFromSeed, randomString } from '../crypto/index.js';
import type { ServerIdentity } from '../identity.js';
import { composeMail, encodeHeaderValue } from '../mail/message.js';
import { pyPercentFormat, resolveTemplate } from '../mail/templates.js';
import { errorMessage } from '../util/error-message.js';
import type { Admission } from '../util/rate-limiter.js';

export interface InviteDeps {
  config: SydentConfig;
  facades: Pick<Facades, 'stores' | 'mailer' | 'reads'>;
  identity: ServerIdentity;
  clock: Clock;
  /** takes one token of the sender's mail rate limit (`email.ratelimit_sender`) */
  admitSender: (sender: string) => Admission | Promise<Admission>;
}

export interface InviteRequest {
  /** every field the homeserver sent (Synapse adds its own, e.g. org.matrix.web_client_location) */
  args: Record<string, unknown>;
  /** casefolded email */
  address: string;
  /** the address as the homeserver sent it, where the mail goes */
  sendTo: string;
  roomId: string;
  sender: string;
  /** true when the sender was authenticated (v2): the mail names the verified sender */
  verifiedSender: boolean;
  /** `?brand=`: the template folder to use (brand.default when null or unknown) */
  brand: string | null;
}

interface StoredInvite {
  token: string;
  public_key: string;
  public_keys: { public_key: string; key_validity_url: string }[];
  display_name: string;
}

/** What came of a store-invite: the invite, or why none was stored. */
export type InviteOutcome =
  | { ok: true; invite: StoredInvite }
  /** the sender's mail rate limit */
  | { ok: false; retryAfterMs: number }
  /** the address is bound already: the homeserver should invite that user */
  | { ok: false; boundTo: string };

/** Sydent's invite tokens: 128 random letters (the spec allows [0-9a-zA-Z.=_-], 1-255). */
const TOKEN_LENGTH = 128;

/** How long taking back an invite whose mail failed may take, whatever time its request had left. */
const DISCARD_TIMEOUT_MS = 5_000;

export class InviteMailError extends Error {
  override name = 'InviteMailError';
}

export async function storeInvite(deps: InviteDeps, req: InviteRequest, request: CallOptions): Promise<InviteOutcome> {
  const { config, identity, facades } = deps;
  const admission = await deps.admitSender(req.sender);
  if (!admission.ok) return { ok: false, retryAfterMs: admission.retryAfterMs };
  const bound = await facades.reads.associations.lookup('email', req.address, deps.clock.now());
  if (bound) return { ok: false, boundTo: bound.mxid };

  const token = randomString(TOKEN_LENGTH, LETTERS);
  const seed = generateSeed();
  const ephemeralPublicKey = encodeBase64Url(publicKeyFromSeed(seed));
  const now = deps.clock.now();

  const mail = composeMail(
    resolveTemplate(config, req.brand, 'invite_template.eml'),
    req.sendTo,
    inviteSubstitutions(config, req, token, encodeBase64Url(seed)),
    { email: config.email, now },
  );

  // Record, then act: the mail goes out only once the invite is stored.
  await facades.stores.storeInvite(
    { medium: 'email', address: req.address, roomId: req.roomId, sender: req.sender, token, ephemeralPublicKey, now },
    request,
  );
  try {
    await facades.mailer.send({ to: mail.to, raw: mail.raw }, request);
  } catch (error) {
    // Nobody will ever hold this token: take the invite back rather than leave a dead row. The request's time may be
    // up (that is often why the mail failed), so this write gets a little of its own.
    await facades.stores.discardInvite({ token, ephemeralPublicKey }, { timeoutMs: DISCARD_TIMEOUT_MS });
    throw new InviteMailError(errorMessage(error));
  }

  const base = `${config.http.clientHttpBase}/_matrix/identity/v2`;
  const invite: StoredInvite = {
    token,
    // Older homeservers read the long-term key from here; newer ones use public_keys.
    public_key: identity.publicKeyBase64,
    public_keys: [
      { public_key: identity.publicKeyBase64, key_validity_url: `${base}/pubkey/isvalid` },
      { public_key: ephemeralPublicKey, key_validity_url: `${base}/pubkey/ephemeral/isvalid` },
    ],
    display_name: redactEmail(
      req.sendTo,
      config.email.usernameObfuscateCharacters,
      config.email.domainObfuscateCharacters,
    ),
  };
  return { ok: true, invite };
}

/** The variables of Sydent's invite template (sydent-behaviour §8.4). */
function inviteSubstitutions(
  config: SydentConfig,
  req: InviteRequest,
  token: string,
  ephemeralPrivateKey: string,
): Record<string, string> {
  const subs: Record<string, string> = {
    sender_display_name: '',
    room_name: '',
    bracketed_room_name: '',
    room_avatar_url: '',
    sender_avatar_url: '',
    guest_user_id: '',
    guest_access_token: '',
    room_type: '',
  };
  for (const [key, value] of Object.entries(req.args)) if (typeof value === 'string') subs[key] = value;
  subs['token'] = token;
  subs['ephemeral_private_key'] = ephemeralPrivateKey;
  subs['bracketed_verified_sender'] = req.verifiedSender ? `(${req.sender}) ` : '';
  const displayName = subs['sender_display_name'] ?? '';
  if ([...displayName].length > 20) subs['sender_display_name'] = `${[...displayName].slice(0, 19).join('')}…`;
  const roomName = subs['room_name'] ?? '';
  if ([...roomName].length > 30) subs['room_name'] = `${[...roomName].slice(0, 25).join('')}…`;
  if (subs['room_name']) subs['bracketed_room_name'] = `(${subs['room_name']}) `;
  subs['web_client_location'] =
    webClientLocation(req.args['org.matrix.web_client_location']) ?? config.email.defaultWebClientLocation;
  // The link in the mail lets a web client sign the invite with its ephemeral key: v1 needs no access token.
  subs['sign_url'] = config.general.enableV1Access
    ? `${config.http.clientHttpBase}/_matrix/identity/api/v1/sign-ed25519`
    : `${config.http.clientHttpBase}/_matrix/identity/v2/sign-ed25519`;
  const subject = subs['room_type'] === 'm.space' ? config.email.inviteSubjectSpace : config.email.inviteSubject;
  subs['subject_header_value'] = encodeHeaderValue(pyPercentFormat(subject, subs, 'email.invite.subject'));
  return subs;
}

/**
 * The homeserver's web client address, which becomes the mail's button link: only an http(s) URL, as the URL parser
 * writes it (no line break, quote or space survives), without the `/` it adds to a bare origin, since the templates
 * append `/#/room/…` themselves. Anything else (`javascript:…`, not a URL) is null: the configured default is used.
 */
function webClientLocation(value: unknown): string | null {
  if (typeof value !== 'string') return null;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return null;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return null;
  return url.href.endsWith('/') && !value.endsWith('/') ? url.href.slice(0, -1) : url.href;
}

/** Sydent's redaction of the invited address: `Invitee@Example.com` → `Inv...@Exa...`. */
function redactEmail(address: string, userChars: number, domainChars: number): string {
  const at = address.indexOf('@');
  const user = at === -1 ? address : address.slice(0, at);
  const domain = at === -1 ? '' : address.slice(at + 1);
  return `${redactPart(user, userChars)}@${redactPart(domain, domainChars)}`;
}

function redactPart(s: string, n: number): string {
  const chars = [...s];
  if (chars.length <= n) {
    if (chars.length > 5) return `${chars.slice(0, 3).join('')}...`;
    if (chars.length > 1) return `${chars[0]}...`;
    return '...';
  }
  return `${chars.slice(0, n).join('')}...`;
}
