import assert from "node:assert/strict";
import { type DemoRow, formatTable } from "../../examples/demo/report.ts";

const row = (method: string, bitsPerActivation?: number): DemoRow => ({
  method,
  bitsPerWeight: 4.25,
  sizeBytes: 1024,
  perplexity: { t: 7.5 },
  tokens: { t: 100 },
  seconds: 1,
  evalSeconds: 1,
  layerError: null,
  density: 1,
  ...(bitsPerActivation !== undefined ? { bitsPerActivation } : {}),
});

Deno.test("formatTable() adds a bits/act column only when some method quantizes activations", () => {
  assert(!formatTable([row("a"), row("b", 32)], ["t"]).includes("bits/act"));
  const table = formatTable([row("a"), row("b", 4.4)], ["t"]);
  const [head, , a, b] = table.split("\n");
  assert.match(head!, /bits\/weight \| bits\/act \|/);
  assert.match(a!, /4\.25 \|\s+32\.00 \|/);
  assert.match(b!, /4\.25 \|\s+4\.40 \|/);
});

Deno.test("formatTable() adds a bits/kv column only when some method quantizes the KV cache", () => {
  assert(!formatTable([row("a"), { ...row("b"), bitsPerKv: 32 }], ["t"]).includes("bits/kv"));
  const table = formatTable([row("a", 4.4), { ...row("b", 4.4), bitsPerKv: 5.125 }], ["t"]);
  const [head, , a, b] = table.split("\n");
  assert.match(head!, /bits\/act \| bits\/kv \|/);
  assert.match(a!, /4\.40 \|\s+32\.00 \|/);
  assert.match(b!, /4\.40 \|\s+5\.13 \|/);
});
