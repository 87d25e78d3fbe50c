/**
 * `--inspect`: live actor events for Stately's inspector, over a WebSocket relay on loopback only. Our relay
 * replaces @statelyai/inspect's bundled server, which listens on every interface and embeds the hosted UI;
 * local tools (the Stately editor extension, a receiver from @statelyai/inspect) connect to it instead.
 */
import { createWebSocketInspector, type StatelyInspectionEvent } from '@statelyai/inspect';
import { WebSocketServer, WebSocket, type RawData } from 'ws';
import type { InspectionEvent, Observer } from 'xstate';
import { redactForInspection } from './redact.js';

export interface Inspection {
  /** pass to createActor's `inspect` option */
  inspect: Observer<InspectionEvent> | ((event: InspectionEvent) => void);
  url: string;
  stop(): Promise<void>;
}

/** A message's text: one Buffer with ws's default binaryType, fragments or an ArrayBuffer with the others. */
function textOf(data: RawData): string {
  if (Buffer.isBuffer(data)) return data.toString();
  return (Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)).toString();
}

/** A relay: whatever one client sends, every other client receives; the last events are replayed to newcomers. */
async function startRelay(port: number): Promise<{ server: WebSocketServer; port: number }> {
  const server = new WebSocketServer({ host: '127.0.0.1', port });
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  const replay: string[] = [];
  server.on('connection', (ws) => {
    for (const msg of replay) ws.send(msg);
    ws.on('message', (data) => {
      const msg = textOf(data);
      replay.push(msg);
      if (replay.length > 500) replay.shift();
      for (const client of server.clients) if (client !== ws && client.readyState === WebSocket.OPEN) client.send(msg);
    });
  });
  const address = server.address();
  return { server, port: typeof address === 'object' && address ? address.port : port };
}

export async function startInspection(port: number): Promise<Inspection> {
  const relay = await startRelay(port);
  const url = `ws://127.0.0.1:${relay.port}`;
  const inspector = createWebSocketInspector({
    url,
    serialize: (event: StatelyInspectionEvent) => redactForInspection(event) as StatelyInspectionEvent,
  });
  return {
    inspect: inspector.inspect as Inspection['inspect'],
    url,
    stop: async () => {
      inspector.stop();
      for (const client of relay.server.clients) client.terminate();
      await new Promise<void>((resolve) => relay.server.close(() => resolve()));
    },
  };
}
