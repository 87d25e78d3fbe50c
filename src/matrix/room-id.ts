/**
 * Room IDs as homeservers send them. Any room version's are taken, as Sydent took them: newer room versions have
 * no `:server` part, so only the length and control characters are held to a rule.
 */

export const MAX_ROOM_ID_LENGTH = 255;
/** C0, DEL and C1: nothing a room ID may hold, and nothing a mail header or link should carry. */
// eslint-disable-next-line no-control-regex -- matching control characters is this regex's job
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f]/;

/** Whether `roomId` is 1 to 255 characters without control characters. */
export function isAcceptableRoomId(roomId: string): boolean {
  return roomId !== '' && roomId.length <= MAX_ROOM_ID_LENGTH && !CONTROL_CHARACTERS.test(roomId);
}
