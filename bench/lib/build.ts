/**
 * The server as an operator runs it: src/ transpiled to JavaScript (TypeScript's own transpiler, no type check) in
 * `.tmp/bench-build/dist/`, run by plain `node`, without tsx compiling every module at start-up. The package's
 * `config/` is linked beside it, where the code looks for its shipped templates (two levels above config/paths.js),
 * and node_modules resolve from the checkout above. Built once per bench process.
 */
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { ROOT } from './child.js';

const OUT = path.join(ROOT, '.tmp', 'bench-build');

let built: string | null = null;

/** The built `main.js` (built on the first call). */
export function builtServer(): string {
  if (built) return built;
  fs.rmSync(OUT, { recursive: true, force: true });
  const src = path.join(ROOT, 'src');
  const options: ts.CompilerOptions = {
    module: ts.ModuleKind.ES2022,
    target: ts.ScriptTarget.ES2022,
    verbatimModuleSyntax: true,
  };
  for (const rel of fs.readdirSync(src, { recursive: true, encoding: 'utf8' })) {
    if (!rel.endsWith('.ts') || rel.endsWith('.d.ts')) continue;
    const out = path.join(OUT, 'dist', rel.replace(/\.ts$/, '.js'));
    fs.mkdirSync(path.dirname(out), { recursive: true });
    const { outputText } = ts.transpileModule(fs.readFileSync(path.join(src, rel), 'utf8'), {
      compilerOptions: options,
      fileName: rel,
    });
    fs.writeFileSync(out, outputText);
  }
  fs.symlinkSync(path.join(ROOT, 'config'), path.join(OUT, 'config'));
  // ESM: the nearest package.json says "type": "module"
  fs.writeFileSync(path.join(OUT, 'package.json'), '{ "type": "module" }\n');
  built = path.join(OUT, 'dist', 'main.js');
  return built;
}
