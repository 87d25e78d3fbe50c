/**
 * Sends the validation token of an email session: renders the brand's verification template with Sydent's
 * variables and hands the message to the mailer, resolving once the SMTP server accepted it.
 */
import type { SydentConfig } from '../config/types.js';
import type { SendTokenInput } from '../machines/validation-session.js';
import { composeMail } from '../mail/message.js';
import { pyQuote } from '../mail/quote.js';
import { resolveTemplate } from '../mail/templates.js';
import type { SystemDeps } from '../actors/deps.js';
import type { Facades } from '../actors/facade.js';
import type { TokenSender } from './host.js';
import { nextLinkWithSid } from './next-link.js';

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

export function createEmailTokenSender(deps: SystemDeps, mailer: Facades['mailer']): TokenSender {
  return async (input, request) => {
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
    // At the deadline the mailer aborts the SMTP exchange: no mail arrives for a request answered as failed.
    await mailer.send({ to: mail.to, raw: mail.raw }, request);
  };
}
