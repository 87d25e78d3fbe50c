/**
 * The bare twins of the write scenarios: a bare fastify route doing the same essential work as sydent-ts's, with
 * nothing else, on a copy of the same database: how fast this stack (Node 20, fastify, better-sqlite3, nodemailer,
 * Node's ed25519) can do that work on this machine. Not sydent-ts, and imports nothing of it.
 *
 *   node --import tsx bench/lib/twin-server.ts request-token <port> <db> <smtp port> <templates dir>
 *   node --import tsx bench/lib/twin-server.ts bind <port> <db> <server name>
 *
 * - `request-token` (`POST /requestToken`, `{ client_secret, email, send_attempt }`): a fresh sid (checked unused),
 *   a 32-character token, then in one transaction Sydent's session and token rows and a machine row of the same
 *   shape as sydent-ts's; then one mail, the verification template (read and split at its placeholders once)
 *   filled in, sent over one of 32 SMTP connections kept open (nodemailer's SMTPConnection, one message at a time
 *   each, as sydent-ts's mail worker sends) to the given SMTP server (the bench's sink). Answers `{ sid }` once the
 *   server accepted the mail.
 * - `bind` (`POST /bind`, `{ medium, address, mxid }`): the lookup hash under the stored pepper, the association
 *   signed (canonical JSON, ed25519), then in one transaction the pending invites read, the local and the global
 *   row written and the homeserver callback recorded in the outbox, as a sydent-ts bind does. Answers the signed
 *   association. (Delivering the callback is the notifier's later work, not the request's.)
 *
 * The database is opened as twin-db.ts says: sydent-ts's pragmas, with a larger page cache.
 */
import Fastify from 'fastify';
import { createHash, createPrivateKey, createPublicKey, randomBytes, randomInt, sign } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import SMTPConnection from 'nodemailer/lib/smtp-connection';

import { closeOnSignal, openTwinDb } from './twin-db.js';

const [kind, portArg, dbPath, ...rest] = process.argv.slice(2);
const port = Number(portArg);
if ((kind !== 'request-token' && kind !== 'bind') || !Number.isInteger(port) || !dbPath) {
  process.stderr.write('usage: twin-server.ts request-token|bind <port> <db> …\n');
  process.exit(2);
}

const db = openTwinDb(dbPath);
const app = Fastify({ logger: false });
let publicKey: string | null = null;

const ALPHANUMERIC = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';

/** A uniformly random alphanumeric string: bytes below 248 (= 4 × 62) map without bias, the rest are skipped. */
function randomToken(length: number): string {
  let out = '';
  while (out.length < length) {
    for (const b of randomBytes(length * 2)) {
      if (b < 248) out += ALPHANUMERIC[b % 62];
      if (out.length === length) break;
    }
  }
  return out;
}

/**
 * SMTP connections kept open and reused, one message at a time each, up to `max` (sydent-ts's SMTP_CONNECTIONS): a
 * send waits for a free one. The bench's sink never fails, so neither does this (a failed connection is not reused).
 */
function pooledSmtp(
  options: ConstructorParameters<typeof SMTPConnection>[0],
  max: number,
): { send(envelope: { from: string; to: string[] }, raw: string): Promise<void> } {
  const idle: SMTPConnection[] = [];
  const waiting: ((c: SMTPConnection) => void)[] = [];
  let open = 0;
  const connection = async (): Promise<SMTPConnection> => {
    const ready = idle.pop();
    if (ready) return ready;
    if (open >= max) return new Promise((resolve) => waiting.push(resolve));
    open++;
    const c = new SMTPConnection(options);
    c.on('error', () => open--);
    await new Promise<void>((resolve, reject) => c.connect((e) => (e ? reject(e) : resolve())));
    return c;
  };
  const release = (c: SMTPConnection): void => {
    const next = waiting.shift();
    if (next) next(c);
    else idle.push(c);
  };
  return {
    async send(envelope, raw) {
      const c = await connection();
      await new Promise<void>((resolve, reject) => c.send(envelope, raw, (e) => (e ? reject(e) : resolve())));
      release(c);
    },
  };
}

if (kind === 'request-token') {
  const [smtpPort, templatesDir] = rest;
  const smtp = pooledSmtp({ host: '127.0.0.1', port: Number(smtpPort), ignoreTLS: true, name: 'bench.test' }, 32);
  const mail = compileTemplate(
    fs.readFileSync(path.join(templatesDir!, 'matrix-org', 'verification_template.eml.j2'), 'utf8'),
  );

  const sidUsed = db.prepare<[number], { id: number }>('SELECT id FROM threepid_validation_sessions WHERE id = ?');
  const insertSession = db.prepare(
    'INSERT INTO threepid_validation_sessions (id, medium, address, clientSecret, validated, mtime) VALUES (?, ?, ?, ?, 0, ?)',
  );
  const insertToken = db.prepare(
    'INSERT INTO threepid_token_auths (validationSession, token, sendAttemptNumber) VALUES (?, ?, ?)',
  );
  const insertMachine = db.prepare(
    'INSERT INTO session_machines (sid, state, context, machine_version, row_version, history, updated_ts) VALUES (?, ?, ?, 1, 1, ?, ?)',
  );
  const create = db.transaction(
    (
      sid: number,
      address: string,
      secret: string,
      token: string,
      sendAttempt: number,
      context: string,
      history: string,
      now: number,
    ) => {
      insertSession.run(sid, 'email', address, secret, now);
      insertToken.run(sid, token, sendAttempt);
      insertMachine.run(sid, 'sendingToken', context, history, now);
    },
  );

  app.post<{ Body: { client_secret: string; email: string; send_attempt: number; next_link?: string } }>(
    '/requestToken',
    {
      schema: {
        body: {
          type: 'object',
          required: ['client_secret', 'email', 'send_attempt'],
          properties: {
            client_secret: { type: 'string', pattern: '^[0-9a-zA-Z.=_-]{1,255}$' },
            email: { type: 'string', maxLength: 500 },
            send_attempt: { type: 'integer' },
            next_link: { type: 'string' },
          },
        },
      },
    },
    async (req) => {
      const { client_secret: secret, email, send_attempt: sendAttempt } = req.body;
      const address = email.toLowerCase();
      const now = Date.now();
      let sid: number;
      // as sydent-ts makes them (src/store/sessions.ts newSid): the hour, then 31 random bits
      do sid = Math.floor(now / 3_600_000) * 2 ** 31 + randomInt(1, 2 ** 31);
      while (sidUsed.get(sid));
      const token = randomToken(32);
      const context = {
        sid: String(sid),
        medium: 'email',
        address,
        sendTo: email,
        clientSecret: secret,
        token,
        sendAttempt,
        mtime: now,
        nextLink: req.body.next_link ?? null,
        brand: null,
        ipAddress: req.ip,
        everSent: false,
        validatedAt: null,
        mxid: null,
        rejection: null,
        lastError: null,
      };
      const history = [{ at: now, event: 'REQUEST_TOKEN', from: 'new', to: 'sendingToken' }];
      create(sid, address, secret, token, sendAttempt, JSON.stringify(context), JSON.stringify(history), now);
      const q = `token=${encodeURIComponent(token)}&client_secret=${encodeURIComponent(secret)}&sid=${sid}`;
      const raw = mail({
        date: new Date(now).toUTCString().replace('GMT', '+0000'),
        from: 'Sydent Validation <noreply@bench.test>',
        to: email,
        messageid: `<${now}${randomToken(16)}@bench.test>`,
        multipart_boundary: randomToken(32),
        link: `http://127.0.0.1:${port}/_matrix/identity/v2/validate/email/submitToken?${q}`,
        token,
        ipaddress: req.ip,
      });
      await smtp.send({ from: 'noreply@bench.test', to: [email] }, raw);
      return { sid: String(sid) };
    },
  );
} else {
  const [serverName] = rest;
  const seed = randomBytes(32);
  const key = createPrivateKey({
    key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]),
    format: 'der',
    type: 'pkcs8',
  });
  publicKey = createPublicKey(key)
    .export({ format: 'der', type: 'spki' })
    .subarray(12)
    .toString('base64')
    .replace(/=+$/, '');
  const pepper = (
    db.prepare('SELECT lookup_pepper FROM hashing_metadata ORDER BY id LIMIT 1').get() as { lookup_pepper: string }
  ).lookup_pepper;
  const LIFETIME_MS = 100 * 365 * 24 * 60 * 60 * 1000;

  const pendingInvites = db.prepare(
    'SELECT medium, address, room_id, sender, token FROM invite_tokens WHERE medium = ? AND address = ? AND sent_ts IS NULL',
  );
  const insertLocal = db.prepare(
    'INSERT OR REPLACE INTO local_threepid_associations (medium, address, lookup_hash, mxid, ts, notBefore, notAfter) VALUES (?, ?, ?, ?, ?, ?, ?)',
  );
  const insertGlobal = db.prepare(
    `INSERT OR IGNORE INTO global_threepid_associations
     (medium, address, lookup_hash, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const insertCallback = db.prepare(
    `INSERT INTO callback_outbox (destination, path, body, medium, address, next_attempt_ts, created_ts) VALUES (?, ?, ?, ?, ?, ?, ?)`,
  );

  /** The association's keys in sorted order, so JSON.stringify is its canonical JSON (strings and integers only). */
  const signed = (a: {
    address: string;
    medium: string;
    mxid: string;
    not_after: number;
    not_before: number;
    ts: number;
  }) => {
    const sig = sign(null, Buffer.from(JSON.stringify(a)), key)
      .toString('base64')
      .replace(/=+$/, '');
    return { ...a, signatures: { [serverName!]: { 'ed25519:0': sig } } };
  };

  const bind = db.transaction((medium: string, address: string, mxid: string, now: number) => {
    const hash = createHash('sha256').update(`${address} ${medium} ${pepper}`).digest('base64url');
    const invites = pendingInvites.all(medium, address);
    if (invites.length) throw new Error('the bench binds addresses without invites');
    const assoc = signed({ address, medium, mxid, not_after: now + LIFETIME_MS, not_before: now, ts: now });
    const localId = Number(insertLocal.run(medium, address, hash, mxid, now, now, assoc.not_after).lastInsertRowid);
    const json = JSON.stringify(assoc);
    insertGlobal.run(medium, address, hash, mxid, now, now, assoc.not_after, serverName!, localId, json);
    const destination = mxid.slice(mxid.indexOf(':') + 1);
    insertCallback.run(destination, '/_matrix/federation/v1/3pid/onbind', json, medium, address, now, now);
    return assoc;
  });

  app.post<{ Body: { medium: string; address: string; mxid: string } }>(
    '/bind',
    {
      schema: {
        body: {
          type: 'object',
          required: ['medium', 'address', 'mxid'],
          properties: { medium: { type: 'string' }, address: { type: 'string' }, mxid: { type: 'string' } },
        },
      },
    },
    async (req) => bind(req.body.medium, req.body.address.toLowerCase(), req.body.mxid, Date.now()),
  );
}

/**
 * A Jinja template with only `{{ name }}` and `{{ name|safe }}`, split at its placeholders once: filling it in is
 * a join, HTML-escaping the values not marked safe (as Sydent's autoescape does), CRLF line endings.
 */
function compileTemplate(src: string): (vars: Record<string, string>) => string {
  const crlf = src.replace(/\r?\n/g, '\r\n');
  const parts: Array<string | { name: string; safe: boolean }> = [];
  let last = 0;
  for (const m of crlf.matchAll(/\{\{\s*(\w+)\s*(\|\s*safe\s*)?\}\}/g)) {
    parts.push(crlf.slice(last, m.index), { name: m[1]!, safe: Boolean(m[2]) });
    last = m.index + m[0].length;
  }
  parts.push(crlf.slice(last));
  const escape = (v: string) => v.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  return (vars) => {
    let out = '';
    for (const p of parts)
      out += typeof p === 'string' ? p : p.safe ? (vars[p.name] ?? '') : escape(vars[p.name] ?? '');
    return out.endsWith('\r\n') ? out : `${out}\r\n`;
  };
}

await app.listen({ host: '127.0.0.1', port });
// with the bind twin's verify key (unpadded base64), for the bench's signature check of what it stored
process.stderr.write(`twin started on ${port}${publicKey ? ` (verify key ${publicKey})` : ''}\n`);

closeOnSignal(app, db);
