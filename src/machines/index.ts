import type { AnyStateMachine } from 'xstate';
import { callbackMachine } from './callback.js';
import { peerMachine } from './peer.js';
import { validationSessionMachine } from './validation-session.js';

/** Every machine of the system, by the file name its exports get in docs/machines/. */
export const MACHINES: Record<string, { machine: AnyStateMachine; exportName: string }> = {
  'validation-session': { machine: validationSessionMachine, exportName: 'validationSessionMachine' },
  callback: { machine: callbackMachine, exportName: 'callbackMachine' },
  peer: { machine: peerMachine, exportName: 'peerMachine' },
};
