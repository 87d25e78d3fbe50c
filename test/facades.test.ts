/**
 * How the supervisors are reached: through typed facades derived from their handler tables, with messages that are
 * plain data (JSON in, the same JSON out: no closures, no handles), each carrying its deadline and a reply id.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { InspectionEvent } from 'xstate';
import type { Facades } from '../src/actors/facade.js';
import { SUPERVISORS, type ActorSystem } from '../src/actors/system.js';
import { freshConfig, startActorSystem } from './helpers/actor-system.js';
import type { Cleanups } from './helpers/cleanups.js';

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const startSystem = (inspect: (event: InspectionEvent) => void): ActorSystem =>
  startActorSystem(freshConfig(cleanups).config, inspect, cleanups);

describe('facades', () => {
  it('send plain data to the supervisors: type, payload, reply id and deadline, the same after a JSON round trip', async () => {
    const sent: unknown[] = [];
    const supervisors = new Set<string>(SUPERVISORS);
    const system = startSystem((event) => {
      if (event.type !== '@xstate.event') return;
      const target = (event.actorRef as unknown as { id: string }).id;
      if (supervisors.has(target) && !event.event.type.startsWith('xstate.')) sent.push(event.event);
    });
    const { sessions, stores } = system.facades;
    const threepid = { medium: 'email', address: 'plain@example.org' };
    const association = await sessions.bind({ threepid, mxid: '@plain:hs.example' });
    expect(association).toMatchObject({ ...threepid, mxid: '@plain:hs.example' });
    expect(await sessions.unbind({ threepid, mxid: '@plain:hs.example' })).toBe(true);
    await stores.registerAccount({ userId: '@plain:hs.example', token: 'a-token', now: Date.now() });
    expect(
      await stores.acceptTerms({
        userId: '@plain:hs.example',
        urls: ['https://terms/1'],
        masterVersion: '1',
        documents: [['https://terms/1']],
      }),
    ).toEqual({
      consented: true,
    });
    expect(await stores.logout({ token: 'a-token' })).toBe(true);

    // bind: the sessions supervisor, the store (the binding as data), the notifier and replication woken; and so on.
    expect(sent.map((e) => (e as { type: string }).type)).toEqual(
      expect.arrayContaining(['bind', 'unbind', 'wake', 'registerAccount', 'acceptTerms', 'logout']),
    );
    for (const event of sent) {
      expect(Object.keys(event as object).sort()).toEqual(['deadline', 'payload', 'replyTo', 'type']);
      expect(JSON.parse(JSON.stringify(event))).toEqual(event);
    }
  });

  it('are typed by the handler tables: another supervisor, an unknown method or a wrong payload does not compile', async () => {
    const system = startSystem(() => undefined);
    const facades: Facades = system.facades;
    // Checked by `npm run typecheck` (test/ is type-checked): each call below must be a type error.
    const wrong = [
      // @ts-expect-error the mailer has no bind
      () => facades.mailer.bind({}),
      // @ts-expect-error a mail needs `to` and `raw`
      () => facades.mailer.send({ to: 'a@example.org' }),
      // @ts-expect-error the store's bind takes the binding as the bind flow made it, not a 3PID
      () => facades.stores.bind({ threepid: { medium: 'email', address: 'a@example.org' }, mxid: '@a:hs.example' }),
      // @ts-expect-error ADMIT is the mailer's `admit` now: raw request names are not methods
      () => facades.mailer.ADMIT({ key: 'k' }),
    ];
    // And at run time an unknown method is not there to call.
    expect(wrong).toHaveLength(4);
    expect((facades.mailer as unknown as Record<string, unknown>)['bind']).toBeUndefined();
    expect(typeof facades.mailer.send).toBe('function');
  });
});
