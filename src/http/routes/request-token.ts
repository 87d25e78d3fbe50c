/**
 * What requestToken by mail and by SMS do once their body is checked: a request that repeats one its session already
 * took is answered from the session's rows (sessions/repeat.ts); any other goes to the session, which sends the token
 * before it answers. Both the fastify routes and the fast lane run it.
 */
import { DeadlineExceededError } from '../../actors/ask.js';
import { answerRepeat } from '../../sessions/repeat.js';
import type { RequestTokenArgs } from '../../sessions/host.js';
import type { AppContext } from '../context.js';
import { errors, type MatrixError } from '../errors.js';
import type { LaneRequest } from '../fast-lane.js';

/** How a medium's route refuses: its send failure, and its rate limit's message. */
export interface TokenRefusals {
  sendFailed: () => MatrixError;
  limited: string;
}

/** The session's sid for a checked requestToken; the request completes `args` with its deadline and client address. */
export async function sessionForToken(
  ctx: AppContext,
  request: LaneRequest,
  args: Omit<RequestTokenArgs, 'ipAddress' | 'deadline'>,
  refusals: TokenRefusals,
): Promise<string> {
  const { medium, address, clientSecret, sendAttempt } = args;
  const repeat = await answerRepeat(
    ctx.reads.sessions,
    { medium, address, clientSecret, sendAttempt },
    ctx.clock.now(),
  );
  if (repeat) return repeat.sid;
  const deadline = request.deadline('send');
  const result = await ctx.facades.sessions
    .requestToken({ ...args, ipAddress: request.ip, deadline: deadline.deadline }, deadline)
    .catch((error: unknown) => {
      // Out of time: the send was aborted (nothing is sent later), whether or not the session said so yet.
      throw error instanceof DeadlineExceededError ? refusals.sendFailed() : error;
    });
  if (result.limited) throw errors.limitExceeded(refusals.limited, result.retryAfterMs);
  if (result.state === 'sendFailed') throw refusals.sendFailed();
  return result.sid;
}
