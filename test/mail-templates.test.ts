import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SydentConfig } from '../src/config/types.js';
import {
  effectiveBrand,
  jinjaUrlencode,
  pyPercentFormat,
  renderResponsePage,
  renderTemplate,
  renderTemplateCrlf,
  resolveTemplate,
  splitPlainJinja,
  TemplateError,
  templateAt,
} from '../src/mail/templates.js';
import { toCrlf } from '../src/mail/crlf.js';
import { tempDir } from './helpers/tmp.js';

let tmp: { dir: string; cleanup: () => void };
let root: string;

function write(rel: string, text: string): string {
  const file = path.join(root, rel);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
  return file;
}

function config(
  over: { template?: string; inviteTemplate?: string; verifyResponseTemplate?: string } = {},
): SydentConfig {
  return {
    general: {
      templatesPath: root,
      validBrands: ['matrix-org', 'vector-im', 'legacy-only'],
      brandDefault: 'matrix-org',
    },
    email: { template: over.template ?? null, inviteTemplate: over.inviteTemplate ?? null },
    http: { verifyResponseTemplate: over.verifyResponseTemplate ?? null },
  } as unknown as SydentConfig;
}

// A template in Sydent's .j2 style, as an operator may have written it.
const SYDENT_STYLE = `From: {{ from|safe }}
To: {{ to|safe }}
Subject: {{ subject_header_value|safe }}

text: {{ link|safe }}
html: <a href="{{ link }}">{{ token }}</a>
url: {{ web_client_location }}/#/room/{{ room_id|urlencode }}?email={{ to|urlencode }}
who: {{ sender_display_name }} / {{ sender_display_name|safe }}
{% if room_type == "m.space" %}space{% else %}room{% endif %}
css: width: 100%%;
`;

beforeAll(() => {
  tmp = tempDir('sydent-ts-templates-');
  root = tmp.dir;
  write('matrix-org/verification_template.eml.j2', 'j2 {{ link }}\n');
  write('matrix-org/verification_template.eml', 'legacy %(link)s\n');
  write('matrix-org/invite_template.eml.j2', SYDENT_STYLE);
  write('matrix-org/verify_response_template.html', '<p>%(message)s</p>\n');
  write('vector-im/verification_template.eml', 'vector legacy %(link)s\n');
  write('vector-im/invite_template.eml.j2', 'vector j2\n');
  write('legacy-only/verify_response_template.html.j2', '<b>{{ message }}</b>\n');
  write('not-a-brand/verification_template.eml.j2', 'must not be used\n');
});

afterAll(() => tmp.cleanup());

describe('Jinja2 (.j2) templates', () => {
  const vars = {
    from: 'Matrix <noreply@example.org>',
    to: 'alice+x@example.org',
    subject_header_value: '=?utf8?q?Hi?=',
    link: 'https://is.example.org/_matrix/identity/api/v1/validate/email/submitToken?token=abc&client_secret=s&sid=1',
    token: '<<token>>',
    web_client_location: 'https://app.example.org',
    room_id: '!room:example.org',
    sender_display_name: "Bob's <b>",
    room_type: 'm.space',
  };

  it("renders Sydent's variables with Jinja2's escaping, urlencode and |safe", () => {
    const out = renderTemplate(resolveTemplate(config(), 'matrix-org', 'invite_template.eml'), vars);
    expect(out).toBe(
      [
        'From: Matrix <noreply@example.org>',
        'To: alice+x@example.org',
        'Subject: =?utf8?q?Hi?=',
        '',
        `text: ${vars.link}`,
        `html: <a href="${vars.link.replaceAll('&', '&amp;')}">&lt;&lt;token&gt;&gt;</a>`,
        'url: https://app.example.org/#/room/%21room%3Aexample.org?email=alice%2Bx%40example.org',
        "who: Bob&#39;s &lt;b&gt; / Bob's <b>",
        'space',
        'css: width: 100%%;', // Jinja2 leaves % alone
      ].join('\n'), // and drops the file's one trailing newline
    );
  });

  it('escapes " as &#34; and leaves backslashes, like markupsafe', () => {
    write('matrix-org/quotes.j2', '{{ x }}|{{ x|e }}|{{ x|escape }}|{{ x|safe|e }}');
    const out = renderTemplate(templateAt(path.join(root, 'matrix-org/quotes.j2'), root), { x: `"a\\b'&` });
    expect(out).toBe('&#34;a\\b&#39;&amp;|&#34;a\\b&#39;&amp;|&#34;a\\b&#39;&amp;|"a\\b\'&');
  });

  it('renders an undefined variable as empty, as Jinja2 does', () => {
    write('matrix-org/undef.j2', '[{{ nope }}][{{ nope|urlencode }}]');
    expect(renderTemplate(templateAt(path.join(root, 'matrix-org/undef.j2'), root), {})).toBe('[][]');
  });

  it('includes other templates relative to templates.path and refuses to leave it', () => {
    write('matrix-org/footer.j2', 'footer for {{ to }}\n');
    write('matrix-org/with-include.j2', 'body\n{% include "matrix-org/footer.j2" %}\n');
    const t = templateAt(path.join(root, 'matrix-org/with-include.j2'), root);
    expect(renderTemplate(t, { to: 'a&b' })).toBe('body\nfooter for a&amp;b');
    write('matrix-org/escape.j2', '{% include "../../etc/passwd" %}');
    expect(() => renderTemplate(templateAt(path.join(root, 'matrix-org/escape.j2'), root), {})).toThrow(TemplateError);
  });

  it('picks up an edited template (Jinja2 auto_reload)', () => {
    const file = write('matrix-org/reload.j2', 'one {{ x }}');
    const t = templateAt(file, root);
    expect(renderTemplate(t, { x: '1' })).toBe('one 1');
    fs.writeFileSync(file, 'two {{ x }}');
    const later = new Date(Date.now() + 5000);
    fs.utimesSync(file, later, later);
    expect(renderTemplate(t, { x: '2' })).toBe('two 2');
  });

  it('reports syntax errors as TemplateError naming the file', () => {
    const file = write('matrix-org/broken.j2', '{% if %}');
    expect(() => renderTemplate(templateAt(file, root), {})).toThrow(/broken\.j2/);
  });

  it("urlencode is Jinja2's: strings keep /, mappings become query strings", () => {
    expect(jinjaUrlencode('a/b c!')).toBe('a/b%20c%21');
    expect(jinjaUrlencode({ 'a b': 'c/d', e: 1 })).toBe('a+b=c%2Fd&e=1');
    expect(jinjaUrlencode([['x', 'y z']])).toBe('x=y+z');
    expect(jinjaUrlencode(42)).toBe('42');
  });
});

describe('legacy %-format templates', () => {
  it('substitutes %(name)s with _forhtml and _forurl variants, and %% as %', () => {
    const file = write('matrix-org/legacy.eml', '%(x)s|%(x_forhtml)s|%(x_forurl)s|100%%|%(multipart_boundary)s\n');
    const out = renderTemplate(
      file,
      { x: "Bob's <b> a/b", multipart_boundary: 'B0UND' },
      { noVariants: ['multipart_boundary'] },
    );
    expect(out).toBe("Bob's <b> a/b|Bob&#x27;s &lt;b&gt; a/b|Bob%27s%20%3Cb%3E%20a/b|100%|B0UND\n");
    expect(() =>
      renderTemplate(
        write('matrix-org/legacy2.eml', '%(multipart_boundary_forhtml)s'),
        { multipart_boundary: 'B' },
        { noVariants: ['multipart_boundary'] },
      ),
    ).toThrow(TemplateError);
  });

  it('fails on an unknown name, a bare %, or an unsupported conversion', () => {
    expect(() => pyPercentFormat('%(missing)s', {})).toThrow(/unknown variable "missing"/);
    expect(() => pyPercentFormat('width: 100%;', {})).toThrow(TemplateError);
    expect(() => pyPercentFormat('50%', {})).toThrow(/incomplete format/);
    expect(() => pyPercentFormat('%s', { s: 'x' })).toThrow(/without a \(name\)/);
    expect(() => pyPercentFormat('%(n)d', { n: '1' })).toThrow(/unsupported format/);
    expect(() => pyPercentFormat('%(n', { n: '1' })).toThrow(/incomplete format key/);
  });

  it('follows Python for widths, precision and nested parentheses in keys', () => {
    expect(pyPercentFormat('[%(a)5s][%(a)-5s][%(a).2s][%(b(c))s][%%]', { a: 'xyz', 'b(c)': 'n' })).toBe(
      '[  xyz][xyz  ][xy][n][%]',
    );
    expect(() => pyPercentFormat('%(a)%', { a: 'x' })).toThrow(/unsupported format character/);
    expect(() => pyPercentFormat('%5%', {})).toThrow(/unsupported format character/);
  });
});

describe('template resolution (Sydent get_branded_template)', () => {
  it('prefers <brand>/<name>.j2, else <brand>/<name>', () => {
    const j2 = resolveTemplate(config(), 'matrix-org', 'verification_template.eml');
    expect(j2).toEqual({
      path: path.join(root, 'matrix-org/verification_template.eml.j2'),
      format: 'jinja',
      root,
      name: 'matrix-org/verification_template.eml.j2',
    });
    const legacy = resolveTemplate(config(), 'vector-im', 'verification_template.eml');
    expect(legacy.format).toBe('percent');
    expect(legacy.path).toBe(path.join(root, 'vector-im/verification_template.eml'));
    expect(renderTemplate(legacy, { link: 'L' })).toBe('vector legacy L\n');
  });

  it('falls back to brand.default for an unknown, missing or sneaky brand', () => {
    for (const brand of [undefined, null, '', 'not-a-brand', '../matrix-org', 'MATRIX-ORG']) {
      expect(effectiveBrand(config().general, brand)).toBe('matrix-org');
      expect(resolveTemplate(config(), brand, 'verification_template.eml').name).toBe(
        'matrix-org/verification_template.eml.j2',
      );
    }
    expect(effectiveBrand(config().general, 'vector-im')).toBe('vector-im');
  });

  it('the deprecated overrides win over branding', () => {
    const mine = write('custom/mine.eml', 'custom %(link)s');
    const mineJ2 = write('custom/mine.eml.j2', 'custom j2 {{ link }}');
    const page = write('custom/page.html', '<i>%(message)s</i>');
    const c = config({ template: mine, inviteTemplate: mineJ2, verifyResponseTemplate: page });
    expect(resolveTemplate(c, 'vector-im', 'verification_template.eml').path).toBe(mine);
    const inv = resolveTemplate(c, 'vector-im', 'invite_template.eml');
    expect(inv).toMatchObject({ path: mineJ2, format: 'jinja', root, name: 'custom/mine.eml.j2' });
    expect(resolveTemplate(c, 'vector-im', 'verify_response_template.html').path).toBe(page);
    expect(renderResponsePage(c, 'vector-im', 'ok')).toBe('<i>ok</i>');
  });

  it('a .j2 outside templates.path is rendered from its own folder', () => {
    const outside = tempDir('sydent-ts-outside-');
    try {
      const file = path.join(outside.dir, 'x.eml.j2');
      fs.writeFileSync(file, 'outside {{ v }}');
      expect(templateAt(file, root)).toMatchObject({ root: outside.dir, name: 'x.eml.j2', format: 'jinja' });
      expect(renderTemplate(templateAt(file, root), { v: '<' })).toBe('outside &lt;');
    } finally {
      outside.cleanup();
    }
  });
});

describe('the submitToken response page', () => {
  it('substitutes the HTML-escaped message into %(message)s', () => {
    expect(renderResponsePage(config(), null, 'Verification failed: <you> & "them"')).toBe(
      '<p>Verification failed: &lt;you&gt; &amp; &quot;them&quot;</p>\n',
    );
  });

  it('renders a .j2 page with Jinja2 escaping', () => {
    expect(renderResponsePage(config(), 'legacy-only', "it's <ok>")).toBe('<b>it&#39;s &lt;ok&gt;</b>');
  });

  it('the shipped page works', () => {
    const shipped = {
      general: {
        templatesPath: path.resolve('config/templates'),
        validBrands: ['matrix-org'],
        brandDefault: 'matrix-org',
      },
      email: { template: null, inviteTemplate: null },
      http: { verifyResponseTemplate: null },
    } as unknown as SydentConfig;
    const page = renderResponsePage(
      shipped,
      'matrix-org',
      'Verification successful! Please return to your Matrix client to continue.',
    );
    expect(page).toContain('<p>Verification successful! Please return to your Matrix client to continue.</p>');
    expect(page).not.toContain('%(');
  });
});

describe('templates of text and substitutions only', () => {
  const values = {
    from: 'Sydent <noreply@example.org>',
    to: "o'brien+x@example.org",
    link: 'https://id.example/_matrix/identity/v2/validate/email/submitToken?token=a b&client_secret=<x>&sid="1"',
    token: 'tok\'&<>"\\é',
    messageid: '<1x@example.org>',
    date: 'Thu, 26 Nov 2026 19:46:59 -0000',
    multipart_boundary: 'BOUNDARY',
    ipaddress: '10.0.0.1',
  };

  it('are split once and render exactly as nunjucks renders them (the shipped verification mail among them)', () => {
    const shipped = path.join(import.meta.dirname, '..', 'config', 'templates', 'matrix-org');
    const sources = [
      fs.readFileSync(path.join(shipped, 'verification_template.eml.j2'), 'utf8'),
      SYDENT_STYLE.replace(/^\{% if .*$/m, ''),
      'a {{token}} b {{ token | safe }} c {{ link|urlencode }} d {{ missing }} e {{ missing|safe }} f {{ missing|urlencode }}\n',
      '{{ link }}{{ link }}',
      '',
    ];
    sources.forEach((src, i) => {
      expect(splitPlainJinja(src), `source ${i}`).not.toBeNull();
      const plain = write(`matrix-org/plain-${i}.j2`, src);
      // The same text with a comment, which nunjucks renders as nothing: the reference rendering.
      const reference = write(`matrix-org/reference-${i}.j2`, `{# nunjucks #}${src}`);
      expect(splitPlainJinja(`{# nunjucks #}${src}`)).toBeNull();
      expect(renderTemplate(templateAt(plain, root), values), `source ${i}`).toBe(
        renderTemplate(templateAt(reference, root), values),
      );
    });
    // The invite template has tags (room type): nunjucks renders it.
    expect(splitPlainJinja(fs.readFileSync(path.join(shipped, 'invite_template.eml.j2'), 'utf8'))).toBeNull();
    const verification = renderTemplate(templateAt(path.join(shipped, 'verification_template.eml.j2'), root), values);
    expect(verification).toContain('tok&#39;&amp;&lt;&gt;&#34;\\é');
  });

  it('render a whole mail with CRLF line endings exactly as toCrlf of the render: mixed line endings, values with line breaks, a bare CR before a value', () => {
    const shipped = path.join(import.meta.dirname, '..', 'config', 'templates', 'matrix-org');
    const sources = [
      fs.readFileSync(path.join(shipped, 'verification_template.eml.j2'), 'utf8'),
      'A: {{ token }}\r\nB: {{ link|safe }}\rC: {{ to }}\n\nbody {{ link|urlencode }}\r\n',
      'bare CR then a value: x\r{{ missing }}\ny',
      'value, then LF: {{ token|safe }}\nend\r',
      '',
    ];
    const broken = { ...values, token: 'line\rbreak\n', link: '\nfirst', to: 'last\r' };
    sources.forEach((src, i) => {
      const t = templateAt(write(`matrix-org/crlf-${i}.j2`, src), root);
      for (const vars of [values, broken]) {
        const whole = renderTemplateCrlf(t, vars);
        expect(whole, `source ${i}`).toBe(toCrlf(renderTemplate(t, vars)));
        expect(whole.replace(/\r\n/g, ''), `source ${i}`).not.toMatch(/[\r\n]/);
      }
    });
  });

  it('leave everything else to nunjucks: tags, comments, expressions, whitespace control, its own names', () => {
    for (const src of [
      '{% if x %}y{% endif %}',
      '{# c #}',
      '{{ x ~ y }}',
      '{{- x }}',
      '{{ x|upper }}',
      '{{ none }}',
      '{{ x.y }}',
      '{{ "s" }}',
    ]) {
      expect(splitPlainJinja(src), src).toBeNull();
    }
    expect(splitPlainJinja('a {{ x }} b')).toEqual(['a ', { name: 'x', filter: 'escape' }, ' b']);
  });

  it("a brand's template is looked up once; an edit to the file is still picked up on the next render", () => {
    const c = config();
    const file = write('vector-im/verification_template.eml.j2', 'first {{ token }}');
    const t = resolveTemplate(c, 'vector-im', 'verification_template.eml');
    expect(renderTemplate(t, { token: '1' })).toBe('first 1');
    expect(resolveTemplate(c, 'vector-im', 'verification_template.eml')).toBe(t);
    fs.writeFileSync(file, 'second {{ token }}');
    const later = new Date(Date.now() + 10_000);
    fs.utimesSync(file, later, later);
    expect(renderTemplate(resolveTemplate(c, 'vector-im', 'verification_template.eml'), { token: '2' })).toBe(
      'second 2',
    );
  });
});
