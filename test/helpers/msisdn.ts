/** The body of a `validate/msisdn/requestToken`, its fields in the order clients send them. */
export function phoneRequest(
  clientSecret: string,
  country: string,
  phoneNumber: string,
  sendAttempt = 1,
): { client_secret: string; country: string; phone_number: string; send_attempt: number } {
  return { client_secret: clientSecret, country, phone_number: phoneNumber, send_attempt: sendAttempt };
}
