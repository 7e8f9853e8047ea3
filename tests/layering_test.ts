import assert from "node:assert/strict";
import { moduleSpecifiers, readLayeredSources, upwardImports } from "./layering.ts";

Deno.test("no module of the package imports from a layer above its own", async () => {
  const files = await readLayeredSources(new URL("..", import.meta.url).pathname);
  assert(files.size > 100, `only ${files.size} source files found`);
  const bad = upwardImports(files);
  assert.deepEqual(bad.map((b) => `${b.file}:${b.line} imports ${b.target}`), []);
});

Deno.test("the layering check flags upward, sideways and out-of-package imports", () => {
  const files = new Map([
    ["core/a.ts", 'import { b } from "../quantizers/b.ts";\nimport { c } from "./c.ts";'],
    [
      "kernels/k.ts",
      'import type {\n  X,\n  Y,\n} from "../hessian/obs.ts";\nimport { t } from "../core/t.ts";',
    ],
    ["optim/o.ts", 'export * from "../pipeline/p.ts";\nexport { q } from "../pruners/q.ts";'],
    ["hessian/h.ts", 'const m = await import("../examples/x.ts");\nimport "../mod.ts";'],
    [
      "pruners/w.ts",
      'const w = new URL("../models/w.ts", import.meta.url);\nimport { z } from "npm:z";',
    ],
    [
      "quantizers/doc.ts",
      '/**\n * import { x } from "../pipeline/x.ts";\n */\n// import "../models/m.ts";',
    ],
  ]);
  assert.deepEqual(upwardImports(files).map((b) => `${b.file}:${b.line} ${b.target}`), [
    "core/a.ts:1 quantizers/b.ts",
    "kernels/k.ts:4 hessian/obs.ts",
    "optim/o.ts:1 pipeline/p.ts",
    "hessian/h.ts:1 examples/x.ts",
    "hessian/h.ts:2 mod.ts",
    "pruners/w.ts:1 models/w.ts",
  ]);
});

Deno.test("moduleSpecifiers reads single- and multi-line imports and re-exports only", () => {
  const src = [
    'import assert from "node:assert/strict";',
    "import {",
    "  a,",
    '} from "./a.ts";',
    'export * from "./b.ts";',
    'const s = `} from "./not_an_import.ts"`;',
  ].join("\n");
  assert.deepEqual(moduleSpecifiers(src), [
    { specifier: "node:assert/strict", line: 1 },
    { specifier: "./a.ts", line: 4 },
    { specifier: "./b.ts", line: 5 },
  ]);
});
