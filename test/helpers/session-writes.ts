import type { SessionWrite } from '../../src/store/sessions.js';

/**
 * The write that saves a new session: sid 77 of alice@example.org in tokenSent, our token sent once, at 1 000 ms;
 * `over` changes what a test is about.
 */
export function sessionWrite(over: Partial<SessionWrite> = {}): SessionWrite {
  return {
    sid: 77,
    state: 'tokenSent',
    context: '{}',
    machineVersion: 1,
    address: 'alice@example.org',
    validated: false,
    mtime: 1_000,
    token: 'OurToken',
    sendAttempt: 1,
    history: [],
    now: 1_000,
    expectedSydent: null,
    ...over,
  };
}
