import { describe, expect, it } from 'vitest';
import { markupEscape, pyHtmlEscape, pyQuote, pyQuoteAll, pyQuoteForQuery } from '../src/mail/quote.js';

// Expected values recorded with Python 3.11: urllib.parse.quote, html.escape; markupsafe.escape by its table.
describe('pyQuote (urllib.parse.quote, safe="/")', () => {
  it.each([
    ['https://example.org/a b?c=d&e=f#g', 'https%3A//example.org/a%20b%3Fc%3Dd%26e%3Df%23g'],
    ["!\\$&'()*+,;=:@/?#[]", '%21%5C%24%26%27%28%29%2A%2B%2C%3B%3D%3A%40/%3F%23%5B%5D'],
    ['~_.-AZaz09', '~_.-AZaz09'],
    ['Strauß 日本 🙂', 'Strau%C3%9F%20%E6%97%A5%E6%9C%AC%20%F0%9F%99%82'],
    ['%41', '%2541'],
    ['a\\b"c<d>', 'a%5Cb%22c%3Cd%3E'],
    ['', ''],
    ['\x00\x7f', '%00%7F'],
    ['!room:example.org', '%21room%3Aexample.org'],
  ])('%j', (input, expected) => {
    expect(pyQuote(input)).toBe(expected);
  });
});

describe("pyQuoteAll (quote, safe='')", () => {
  it.each([
    ['https://example.org/a b?c=d&e=f#g', 'https%3A%2F%2Fexample.org%2Fa%20b%3Fc%3Dd%26e%3Df%23g'],
    ["!\\$&'()*+,;=:@/?#[]", '%21%5C%24%26%27%28%29%2A%2B%2C%3B%3D%3A%40%2F%3F%23%5B%5D'],
    [
      'https://matrix.org/_matrix/identity/api/v1/sign-ed25519',
      'https%3A%2F%2Fmatrix.org%2F_matrix%2Fidentity%2Fapi%2Fv1%2Fsign-ed25519',
    ],
  ])('%j', (input, expected) => {
    expect(pyQuoteAll(input)).toBe(expected);
  });

  it('is what Jinja2 uses inside query strings, with + for spaces', () => {
    expect(pyQuoteForQuery('a b/c')).toBe('a+b%2Fc');
  });
});

describe('HTML escaping', () => {
  it("Python's html.escape(quote=True) uses &#x27;", () => {
    expect(pyHtmlEscape('Bob\'s <b>"&amp;\\')).toBe('Bob&#x27;s &lt;b&gt;&quot;&amp;amp;\\');
    expect(pyHtmlEscape('<<token>>')).toBe('&lt;&lt;token&gt;&gt;');
  });

  it("markupsafe's escape uses &#39; and &#34; and leaves the backslash", () => {
    expect(markupEscape('Bob\'s <b>"&amp;\\')).toBe('Bob&#39;s &lt;b&gt;&#34;&amp;amp;\\');
    expect(markupEscape("Bob's Emporium of Messages")).toBe('Bob&#39;s Emporium of Messages');
  });
});
