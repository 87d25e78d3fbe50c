import { describe, expect, it } from 'vitest';
import { CASEFOLD_TABLE } from '../src/matrix/casefold-table.js';
import { casefold } from '../src/matrix/casefold.js';

/** [input code points, Python 3.11 `chr(...).casefold()` code points], recorded once with python3. */
const PAIRS: [number[], number[]][] = [
  [[0xdf], [0x73, 0x73]], // ß
  [[0x1e9e], [0x73, 0x73]], // ẞ
  [[0x3a3], [0x3c3]], // Σ
  [[0x3c2], [0x3c3]], // final ς
  [[0x3c3], [0x3c3]],
  [[0x130], [0x69, 0x307]], // Turkish dotted capital I
  [[0x131], [0x131]], // Turkish dotless ı is left alone
  [[0x49], [0x69]],
  [[0x13a0], [0x13a0]], // Cherokee capitals are the fold target
  [[0xab70], [0x13a0]], // Cherokee small letters fold to capitals
  [[0x13f8], [0x13f0]],
  [[0x10400], [0x10428]], // Deseret 𐐀 (astral)
  [[0x10428], [0x10428]],
  [[0x1e900], [0x1e922]], // Adlam (astral)
  [[0x16e40], [0x16e60]], // Medefaidrin (astral)
  [[0x118a0], [0x118c0]], // Warang Citi (astral)
  [[0xfb01], [0x66, 0x69]], // ﬁ
  [[0xfb03], [0x66, 0x66, 0x69]], // ﬃ
  [[0xfb05], [0x73, 0x74]],
  [[0xfb13], [0x574, 0x576]], // Armenian ligature
  [[0x149], [0x2bc, 0x6e]], // ŉ
  [[0x390], [0x3b9, 0x308, 0x301]], // ΐ
  [[0x3b0], [0x3c5, 0x308, 0x301]],
  [[0x1f52], [0x3c5, 0x313, 0x300]],
  [[0x212a], [0x6b]], // Kelvin sign
  [[0x212b], [0xe5]], // Ångström sign
  [[0xb5], [0x3bc]], // micro sign
  [[0x17f], [0x73]], // long s
  [[0x345], [0x3b9]], // combining ypogegrammeni
  [[0x3d0], [0x3b2]],
  [[0x1e9b], [0x1e61]],
  [[0x1c4], [0x1c6]], // Ǆ
  [[0x1c5], [0x1c6]], // ǅ (title case)
  [[0x1f1], [0x1f3]],
  [[0x1f88], [0x1f00, 0x3b9]],
  [[0x1f80], [0x1f00, 0x3b9]],
  [[0x1fbc], [0x3b1, 0x3b9]],
  [[0x1ff3], [0x3c9, 0x3b9]],
  [[0x1f0], [0x6a, 0x30c]],
  [[0x1e96], [0x68, 0x331]],
  [[0xff21], [0xff41]], // fullwidth A
  [[0x24b6], [0x24d0]], // Ⓐ
  [[0x2160], [0x2170]], // Roman numeral one
  [[0xa640], [0xa641]], // Cyrillic extended
  [[0x531], [0x561]], // Armenian
  [[0x23a], [0x2c65]],
  [[0x2c6f], [0x250]],
  [[0xa7b4], [0xa7b5]],
  [[0xa7b5], [0xa7b5]],
  [[0xa7f6], [0xa7f6]],
  [[0xc0], [0xe0]],
  [[0x178], [0xff]],
  [[0xff], [0xff]],
  [[0x192], [0x192]],
  [[0x1dd], [0x1dd]],
];

const str = (cps: number[]): string => String.fromCodePoint(...cps);

describe('casefold', () => {
  it('folds ASCII like lower()', () => {
    expect(casefold('Alice@Example.COM')).toBe('alice@example.com');
    expect(casefold('')).toBe('');
    expect(casefold('[\\]^_`{|}~@0-9')).toBe('[\\]^_`{|}~@0-9');
  });

  it('folds ß to ss', () => {
    expect(casefold('Strauß@Example.com')).toBe('strauss@example.com');
  });

  it('folds Greek sigma forms to σ', () => {
    expect(casefold('ΣΑΣ')).toBe('σασ');
    expect(casefold('ὈΔΥΣΣΕΎΣ')).toBe(casefold('ὀδυσσεύς'));
  });

  it('keeps Turkish dotless ı and expands İ', () => {
    expect(casefold('ıI')).toBe('ıi');
    expect(casefold('İstanbul')).toBe('i\u0307stanbul');
  });

  it('folds Cherokee small letters to capitals and astral letters', () => {
    expect(casefold('\uab70\uab71')).toBe('\u13a0\u13a1');
    expect(casefold('𐐀𐐁@x')).toBe('𐐨𐐩@x');
  });

  it.each(PAIRS.map(([from, to]) => [from.map((c) => c.toString(16)).join(' '), from, to] as const))(
    'U+%s',
    (_name, from, to) => {
      expect([...casefold(str(from))].map((c) => c.codePointAt(0))).toEqual(to);
    },
  );

  it('leaves characters without case alone, including lone surrogates', () => {
    expect(casefold('日本語 ١٢٣ 🙂 \ud800')).toBe('日本語 ١٢٣ 🙂 \ud800');
  });

  it('is idempotent on the whole table', () => {
    for (const entry of CASEFOLD_TABLE.split(';')) {
      const cp = parseInt(entry.split(':')[0] ?? '', 16);
      const once = casefold(String.fromCodePoint(cp));
      expect(casefold(once)).toBe(once);
    }
  });
});
