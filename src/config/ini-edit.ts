/**
 * Setting one option inside an operator's existing INI text. Sydent rewrote the whole file (dropping every
 * comment and moving all defaults into [DEFAULT]); we touch only the lines of that option.
 */
import { DEFAULT_SECTION, formatOption, parseIni, splitLines, type TextLine } from './ini.js';

export function setOptionInText(text: string, section: string, key: string, value: string): string {
  if (value.includes('\n')) throw new Error('setOptionInText: single-line values only');
  const doc = parseIni(text);
  const lines = splitLines(text);
  const eol = lines.find((l) => l.eol !== '')?.eol ?? '\n';
  const optionText = formatOption(key, value)[0] ?? key;
  const target = section === DEFAULT_SECTION ? doc.defaults : doc.sections.get(section);

  const insertAfter = (index: number, added: TextLine[]): void => {
    const before = lines[index];
    if (before && before.eol === '') before.eol = eol;
    lines.splice(index + 1, 0, ...added);
  };

  if (!target) {
    const last = lines[lines.length - 1];
    const added: TextLine[] = [];
    if (last && last.content.trim() !== '') added.push({ content: '', eol });
    added.push({ content: `[${section}]`, eol }, { content: optionText, eol });
    insertAfter(lines.length - 1, added);
  } else {
    const existing = target.options.get(key);
    if (existing) {
      // keep the indentation: it decides whether the following lines are continuations or options
      const lastEol = lines[existing.endLine]?.eol || eol;
      lines.splice(existing.line, existing.endLine - existing.line + 1, {
        content: existing.indent + optionText,
        eol: lastEol,
      });
    } else {
      // after the section's last value line: what follows is only blank lines, comments or the next header,
      // so the new line cannot swallow anything as a continuation
      let after = target.line;
      for (const option of target.options.values()) after = Math.max(after, option.endLine);
      insertAfter(after, [{ content: optionText, eol }]);
    }
  }
  return lines.map((l) => l.content + l.eol).join('');
}
