/**
 * The session rows in Sydent's tables. Saving: never over Sydent's columns that changed since they were read
 * (Sydent wrote them in the meantime), never the address. Loading: Sydent's columns win where they are newer or
 * say more than our session_machines row. The round trip through HTTP is in sydent-round-trip.test.ts.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { SessionContext } from '../src/machines/validation-session.js';
import { reconcileWithSydent, sessionFromSydentRow } from '../src/sessions/sydent-rows.js';
import { closeDatabase, openDatabase } from '../src/store/database.js';
import { SessionConflictError, SessionWrites, SidTakenError, type SydentSessionRow } from '../src/store/sessions.js';
import { sessionOf, tokenRows } from './helpers/email.js';
import { cleanupsAfterEach } from './helpers/cleanups.js';
import { sessionWrite as write } from './helpers/session-writes.js';
import { sydentDb } from './helpers/sydent-rows.js';
import { tempDir } from './helpers/tmp.js';

const cleanups = cleanupsAfterEach();

function store(): { writes: SessionWrites; file: string } {
  const tmp = tempDir('sydent-ts-session-rows-');
  const file = path.join(tmp.dir, 'sydent.db');
  const db = openDatabase(file);
  cleanups.push(tmp.cleanup, () => closeDatabase(db));
  return { writes: new SessionWrites(db), file };
}

describe('creating a session', () => {
  it('under a sid a session of Sydent already has: refused (SidTakenError), nothing written', () => {
    const { writes, file } = store();
    const sydent = sydentDb(file);
    sydent.createSession({
      sid: 77,
      address: 'Alice@Example.ORG',
      clientSecret: 'theirs',
      token: 'SydentToken',
      mtime: 1_000,
    });
    sydent.close();
    expect(() => writes.create('email', 'ours', write({ address: 'bob@example.org' }))).toThrow(SidTakenError);
    expect(sessionOf(file, 77).session).toMatchObject({ address: 'Alice@Example.ORG', clientSecret: 'theirs' });
    expect(tokenRows(file)).toEqual([expect.objectContaining({ token: 'SydentToken' })]);
    expect(writes.create('email', 'ours', write({ sid: 78, address: 'bob@example.org' }))).toBe(1);
  });
});

describe('saving a session', () => {
  it('refuses to overwrite Sydent columns that changed since they were read, and writes nothing', () => {
    const { writes, file } = store();
    expect(writes.create('email', 'secret', write())).toBe(1);
    const seen = { validated: 0, mtime: 1_000, token: 'OurToken', sendAttemptNumber: 1 };
    // in step: saved
    expect(writes.save(write({ mtime: 2_000, expectedSydent: seen }), 1)).toBe(2);
    const now = { ...seen, mtime: 2_000 };

    // Sydent validates the session meanwhile
    const sydent = sydentDb(file);
    sydent.validate(77);
    sydent.close();
    expect(() => writes.save(write({ mtime: 3_000, sendAttempt: 2, expectedSydent: now }), 2)).toThrow(
      SessionConflictError,
    );
    expect(sessionOf(file, 77).session).toMatchObject({ validated: 1, mtime: 2_000 });
    expect(tokenRows(file)).toEqual([expect.objectContaining({ token: 'OurToken', sendAttemptNumber: 1 })]);

    // with what is there now, it saves (and the machine row's version did not move on the refusal)
    expect(writes.save(write({ mtime: 3_000, validated: true, expectedSydent: { ...now, validated: 1 } }), 2)).toBe(3);
    expect(sessionOf(file, 77).session).toMatchObject({ validated: 1, mtime: 3_000 });
  });

  it('never rewrites the address the row was created with', () => {
    const { writes, file } = store();
    const sydent = sydentDb(file);
    sydent.createSession({
      sid: 77,
      address: 'Alice@Example.ORG',
      clientSecret: 'secret',
      token: 'SydentToken',
      mtime: 1_000,
    });
    sydent.close();
    const seen = { validated: 0, mtime: 1_000, token: 'SydentToken', sendAttemptNumber: -1 };
    writes.save(
      write({
        address: 'alice@example.org',
        token: 'SydentToken',
        sendAttempt: -1,
        validated: true,
        expectedSydent: seen,
      }),
      null,
    );
    expect(sessionOf(file, 77).session).toMatchObject({ address: 'Alice@Example.ORG', validated: 1 });
  });
});

describe("loading a session: Sydent's columns win where they are newer or say more", () => {
  const row = (over: Partial<SydentSessionRow> = {}): SydentSessionRow => ({
    id: 77,
    medium: 'email',
    address: 'alice@example.org',
    clientSecret: 'secret',
    validated: 0,
    mtime: 1_000,
    token: 'OurToken',
    sendAttemptNumber: 1,
    ...over,
  });
  const ours = (state: string, over: Partial<SessionContext> = {}) => {
    const { context } = sessionFromSydentRow(row());
    return { state, context: { ...context, createdBySydent: false, everSent: false, ...over } };
  };

  it('an expired session Sydent revived lives again, as it was', () => {
    const revived = reconcileWithSydent(ours('expired', { rejection: 'expired' }), row({ mtime: 9_000 }));
    expect(revived.state).toBe('tokenSent');
    expect(revived.context).toMatchObject({ mtime: 9_000, everSent: true, rejection: null, token: 'OurToken' });
    const validated = reconcileWithSydent(ours('expired', { validatedAt: 500 }), row({ mtime: 9_000, validated: 1 }));
    expect(validated.state).toBe('validated');
    expect(validated.context.validatedAt).toBe(500);
  });

  it('a token Sydent issued is not held by a lock on ours (too many wrong tokens); Sydent re-mailing ours is', () => {
    const locked = ours('locked', { wrongTokens: 5, everSent: true, rejection: 'tokenIncorrect' });
    const renewed = reconcileWithSydent(locked, row({ token: 'SydentsToken', mtime: 9_000 }));
    expect(renewed.state).toBe('tokenSent');
    expect(renewed.context).toMatchObject({ token: 'SydentsToken', wrongTokens: 0, rejection: null });
    expect(reconcileWithSydent(locked, row({ mtime: 9_000 })).state).toBe('locked');
  });

  it("what is older in Sydent's row changes nothing", () => {
    const newer = ours('bound', { mtime: 5_000, validatedAt: 5_000, sendAttempt: 4, mxid: '@a:hs', everSent: true });
    expect(reconcileWithSydent(newer, row({ mtime: 5_000, validated: 1, sendAttemptNumber: 4 }))).toEqual(newer);
    expect(reconcileWithSydent(newer, row({ mtime: 1_000, validated: 0, sendAttemptNumber: 2 }))).toEqual(newer);
  });

  it("a sid that now names another session (Sydent purged ours, then drew the same sid) is taken as Sydent's", () => {
    const other = row({ clientSecret: 'another', address: 'Bob@Example.org', validated: 1, token: 'TheirToken' });
    const loaded = reconcileWithSydent(ours('bound', { mxid: '@a:hs', validatedAt: 1_000 }), other);
    expect(loaded.state).toBe('validated');
    expect(loaded.context).toMatchObject({
      clientSecret: 'another',
      address: 'bob@example.org',
      sendTo: 'Bob@Example.org',
      token: 'TheirToken',
      mxid: null,
      createdBySydent: true,
    });
  });
});
