/** The supervisors a running server's root actor starts, in the order it starts them (the debug endpoint's order). */
export const SUPERVISOR_IDS = ['store', 'mailer', 'sms', 'notifier', 'replication', 'sessions'];
