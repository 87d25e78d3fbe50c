/**
 * Sends the validation token of an email session: renders the brand's verification template with Sydent's
 * variables and hands the message to the mailer, resolving once the SMTP server accepted it.
 */
import type { AnyActorRef } from 'xstate';
import type { SydentConfig } from '../config/types.js';
import type { SendTokenInput } from '../machines/validation-session.js';
import { composeMail } from '../mail/message.js';
import { pyQuote } from '../mail/quote.js';
import { resolveTemplate } from '../mail/templates.js';
import { askMailer } from '../actors/supervisors/mailer.js';
import type { SystemDeps } from '../actors/deps.js';
import type { AnyActorSystem } from '../actors/supervisor.js';
import type { TokenSender } from './host.js';
import { nextLinkWithSid } from './next-link.js';

/** Beyond the deadline, for the mailer's own answer (it gives up at the deadline) to arrive. */
const ANSWER_MARGIN_MS = 500;

/**
 * The link in the mail: the v2 GET submitToken, which needs no access token (the sid, secret and token are
 * the credential), with Sydent's `nextLink` when the client gave a next_link. The server redirects to the
 * session's own next_link, not to this parameter; it is there because clients and tools read it from the mail.
 */
export function submitTokenLink(config: SydentConfig, medium: 'email' | 'msisdn', input: SendTokenInput): string {
  let q = `token=${pyQuote(input.token)}&client_secret=${pyQuote(input.clientSecret)}&sid=${pyQuote(input.sid)}`;
  if (input.nextLink) q += `&nextLink=${pyQuote(nextLinkWithSid(input.nextLink, input.sid))}`;
  return `${config.http.clientHttpBase}/_matrix/identity/v2/validate/${medium}/submitToken?${q}`;
}

export function createEmailTokenSender(deps: SystemDeps, system: AnyActorSystem): TokenSender {
  return async (input, deadline) => {
    const { config } = deps;
    const template = resolveTemplate(config, input.brand, 'verification_template.eml');
    const mail = composeMail(
      template,
      input.sendTo,
      {
        link: submitTokenLink(config, 'email', input),
        token: input.token,
        ipaddress: input.ipAddress ?? 'an unknown location',
      },
      { email: config.email, now: deps.clock.now() },
    );
    const timeout = Math.max(0, deadline - Date.now()) + ANSWER_MARGIN_MS;
    await askMailer(system.get('mailer') as AnyActorRef, 'SEND_MAIL', { to: mail.to, raw: mail.raw, deadline }, timeout);
  };
}
