/** Every line ending (CRLF, bare LF, bare CR) as CRLF, as SMTP wants. */
export function toCrlf(s: string): string {
  return s.replace(/\r\n|\r|\n/g, '\r\n');
}
