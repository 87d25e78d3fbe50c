/** Homeserver callbacks (onbind): the outbox worker and the delivery it runs. */
export { CALLBACK_MAX_BODY_BYTES, deliverCallback } from './deliver.js';
export {
  CallbackWorker,
  DeliveryError,
  type CallbackReadPort,
  type CallbackStorePort,
  type CallbackWorkerOptions,
  type DeliverFn,
  type OutboxView,
} from './worker.js';
