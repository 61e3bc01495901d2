// index.html names the page's whole module graph for preloading (the first picture
// comes sooner than when imports are found wave by wave): a module added to the
// graph and not to the list would load late, and one that is gone would 404.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

const PUBLIC = new URL('../../public/', import.meta.url);
const read = (name) => readFileSync(new URL(name, PUBLIC), 'utf8');

/** The modules `entry` imports, directly or not (relative imports only). */
function graph(entry) {
  const seen = new Set();
  const visit = (name) => {
    if (seen.has(name)) return;
    seen.add(name);
    const imports = /^import\s[^;]*?from\s+['"]\.\/([\w.-]+\.js)['"]/gms;
    for (const [, dep] of read(name).matchAll(imports)) visit(dep);
  };
  visit(entry);
  return seen;
}

test("index.html's entry script and preload list are the page's module graph", () => {
  const html = read('index.html');
  const entry = /<script type="module" src="([\w.-]+\.js)"><\/script>/.exec(html)?.[1];
  assert.equal(entry, 'page.js');
  const preloaded = new Set([...html.matchAll(/<link rel="modulepreload" href="([\w.-]+\.js)">/g)].map((m) => m[1]));
  const modules = graph(entry);
  modules.delete(entry);
  assert.deepEqual([...preloaded].sort(), [...modules].sort());
});
