/**
 * Third-party identifiers (spec appendix "3PID Types"): the canonical form an address is stored, looked up and
 * replicated in.
 */
import { casefold } from './casefold.js';

/** Addresses are compared in their canonical form: emails casefolded (msisdns are digits already). */
export function normaliseAddress(medium: string, address: string): string {
  return medium === 'email' ? casefold(address) : address;
}
