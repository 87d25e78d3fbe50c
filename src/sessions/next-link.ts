/**
 * Where a user goes after following the link in a validation mail. Sydent put the client's `next_link` into the
 * mailed link as `nextLink`, with the session's sid appended (clients read the sid from it), and redirected there
 * after a success. We append the sid the same way, but redirect only to the session's own `next_link`, checked at
 * requestToken: a link in the URL could send anyone's browser anywhere from our address.
 */

/** Sydent's `next_link + ("&" if "?" in next_link else "?") + "sid=" + sid`, byte for byte. */
export function nextLinkWithSid(nextLink: string, sid: string): string {
  return `${nextLink}${nextLink.includes('?') ? '&' : '?'}sid=${sid}`;
}

export interface RedirectSession {
  sid: string;
  nextLink: string | null;
  createdBySydent: boolean;
}

/**
 * The redirect after a successful GET submitToken, or null to show the page. Both links come checked (absolute
 * http or https). A session Sydent created has no stored next_link, only the one in the mail Sydent sent: for
 * those alone, the clicked link's `nextLink` is followed, so mails sent before the switch keep working.
 */
export function redirectAfterValidation(session: RedirectSession, clickedNextLink: string | null): string | null {
  if (session.nextLink) return nextLinkWithSid(session.nextLink, session.sid);
  return session.createdBySydent ? clickedNextLink : null;
}
