/**
 * Matrix identifiers and 3PIDs: pure parsing and normalisation, no I/O. Imported by HTTP, machines and I/O alike.
 */
export { casefold } from './casefold.js';
export {
  checkEmailAddress,
  MAX_ADDRESS_OCTETS,
  MAX_LOCAL_PART_OCTETS,
  type EmailAddressCheck,
} from './email-address.js';
export { countryCodeOf, isCountryField, MAX_PHONE_NUMBER_LENGTH, parsePhone, type ParsedPhone } from './phone.js';
export { isAcceptableRoomId, MAX_ROOM_ID_LENGTH } from './room-id.js';
export { hostForUrl, isValidServerName, parseServerName, type ParsedServerName } from './server-name.js';
export { normaliseAddress } from './threepid.js';
export { isValidUserId, MAX_USER_ID_LENGTH, serverNameOfUserId } from './user-id.js';
