import assert from "node:assert/strict";
import {
  DEMO_METHODS,
  formatMethodList,
  METHOD_PATTERNS,
  parseMethodId,
  selectMethods,
} from "../../examples/demo/methods.ts";

const KEEP_HEAD = [{ match: "output", stages: [] }];

Deno.test("parseMethodId() builds quantizer and pruner methods from their parameters", () => {
  const cases: [string, unknown][] = [
    ["gptq-w4-g128", { kind: "gptq", bits: 4, groupSize: 128 }],
    ["rtn-w2", { kind: "rtn", bits: 2 }],
    ["rtn-w8-g64", { kind: "rtn", bits: 8, groupSize: 64 }],
    ["gptq-w3-g64-act", { kind: "gptq", bits: 3, groupSize: 64, actOrder: true }],
    ["gptq-w6-act", { kind: "gptq", bits: 6, actOrder: true }],
    ["sparsegpt-60", { kind: "sparsegpt", structure: { kind: "unstructured", sparsity: 0.6 } }],
    ["magnitude-25", { kind: "magnitude", structure: { kind: "unstructured", sparsity: 0.25 } }],
    ["wanda-4:8", { kind: "wanda", structure: { kind: "nm", n: 4, m: 8 } }],
    ["sparsegpt-1:2", { kind: "sparsegpt", structure: { kind: "nm", n: 1, m: 2 } }],
    ["spqr-w4-g32", { kind: "spqr", bits: 4, groupSize: 32 }],
    ["spqr-w3-g16-t0.35", { kind: "spqr", bits: 3, groupSize: 16, outlierThreshold: 0.35 }],
    ["spqr-w3-tinf", { kind: "spqr", bits: 3, groupSize: 16, outlierThreshold: Infinity }],
  ];
  for (const [id, stage] of cases) {
    const m = parseMethodId(id);
    assert.equal(m.id, id);
    assert.deepEqual(m.recipe, { stages: [stage], overrides: KEEP_HEAD }, id);
    assert.equal(m.default, false);
  }
  assert.equal(parseMethodId("gptq-w4-g128").description, "GPTQ, 4 bits, groups of 128");
});

Deno.test("parseMethodId() returns the table's row for a named id, patterned or not", () => {
  for (const row of DEMO_METHODS) assert.equal(parseMethodId(row.id), row);
});

Deno.test("parseMethodId() names the parameter out of range and lists what exists", () => {
  const cases: [string, RegExp][] = [
    ["gptq-w9", /Unknown method 'gptq-w9': the bits \(w9\) must be an integer in 2\.\.8/],
    ["rtn-w1-g32", /the bits \(w1\) must be an integer in 2\.\.8/],
    ["rtn-w04", /the bits \(w04\) must be an integer/],
    ["gptq-w4-g0", /the group size \(g0\) must be a positive integer/],
    ["rtn-w4-act", /act-order \(-act\) is a GPTQ option/],
    ["sparsegpt-100", /the sparsity \(100%\) must be an integer percentage in 1\.\.99/],
    ["wanda-0", /the sparsity \(0%\)/],
    ["sparsegpt-4:2", /N:M sparsity needs integers 1 ≤ N < M: got 4:2/],
    ["spqr-w1", /the bits \(w1\) must be an integer in 2\.\.8/],
    ["spqr-w3-g0", /the group size \(g0\) must be a positive integer/],
    ["spqr-w3-t-1", /no named method or pattern fits it/],
    ["awq-w4", /no named method or pattern fits it/],
  ];
  for (const [id, re] of cases) {
    assert.throws(() => parseMethodId(id), (e: Error) => {
      assert.ok(e instanceof RangeError);
      assert.match(e.message, re);
      assert.match(
        e.message,
        /Named methods: fp32, rtn-w8, .*aqlm-2bit.*; patterns: rtn-w\{2\.\.8\}/,
      );
      return true;
    });
  }
  assert.throws(() => selectMethods(["awq-w4"]), /Named methods: fp32, .*, default, all; patterns/);
});

Deno.test("selectMethods() takes patterned ids beside the named sets", () => {
  assert.deepEqual(selectMethods(["fp32", "gptq-w4-g128"]).map((m) => m.id), [
    "fp32",
    "gptq-w4-g128",
  ]);
  assert.ok(selectMethods(["default"]).every((m) => m.default));
  assert.equal(selectMethods(["all"]).length, DEMO_METHODS.length);
});

Deno.test("the method list names every table row and every pattern with examples that parse", () => {
  const text = formatMethodList();
  for (const m of DEMO_METHODS) assert.match(text, new RegExp(`^${m.id} `, "m"));
  for (const p of METHOD_PATTERNS) {
    assert.ok(text.includes(p.pattern), p.pattern);
    for (const id of p.examples) assert.equal(parseMethodId(id).id, id);
  }
});

Deno.test("parseMethodId() appends an eora or svd stage to a compressed base method", () => {
  const m = parseMethodId("gptq-w3+eora-r32-w4-g64");
  assert.deepEqual(m.recipe, {
    stages: [{ kind: "gptq", bits: 3 }, {
      kind: "eora",
      rank: 32,
      quantize: { bits: 4, groupSize: 64 },
    }],
    overrides: KEEP_HEAD,
  });
  assert.equal(
    m.description,
    "GPTQ, 3 bits, per channel, then EoRA rank 32 (factors 4-bit RTN groups of 64)",
  );
  assert.deepEqual(parseMethodId("sparsegpt-2:4+svd-r8").recipe.stages, [
    { kind: "sparsegpt", structure: { kind: "nm", n: 2, m: 4 } },
    { kind: "svd", rank: 8 },
  ]);
  // A named base keeps its overrides; the kept head stays uncompressed.
  const aqlm = parseMethodId("aqlm-2bit+eora-r4");
  assert.equal(aqlm.recipe.overrides![0]!.stages.at(-1)!.kind, "eora");
  assert.deepEqual(aqlm.recipe.overrides!.at(-1), KEEP_HEAD[0]);
  const cases: [string, RegExp][] = [
    ["fp32+eora-r8", /needs a compressed base method, not 'fp32'/],
    ["gptq-w3+eora-r8+svd-r4", /one low-rank correction/],
    ["gptq-w3+eora-r0", /the rank \(r0\) must be a positive integer/],
    ["gptq-w3+svd-r8-w9", /the factor bits \(w9\) must be an integer in 2\.\.8/],
    ["gptq-w3+svd-r8-w4-g0", /the factor group size \(g0\)/],
    ["awq-w4+eora-r8", /no named method or pattern fits it/],
  ];
  for (const [id, re] of cases) assert.throws(() => parseMethodId(id), re);
});

Deno.test("the W8A8 and W4A4 methods name their weight, activation and transform stages", () => {
  const quik = parseMethodId("quik-w4a4-c128");
  assert.deepEqual(quik.recipe.stages, [
    { kind: "gptq", bits: 4, symmetric: true, outliers: { count: 128, bits: 8 } },
    { kind: "act", format: "int4", outliers: { count: 128, format: "int8" } },
  ]);
  assert.throws(() => parseMethodId("quik-w4a4-c0"), /kept columns \(c0\) must be a positive/);
  assert.deepEqual(parseMethodId("w8a8-int8-smooth").transform, {
    kind: "smoothquant",
    alpha: 0.5,
  });
  assert.deepEqual(parseMethodId("quarot-w4a4").transform, {
    kind: "quarot",
    onlineHadamard: true,
  });
  assert.deepEqual(parseMethodId("quarot-w4a4-nohad").transform, {
    kind: "quarot",
    onlineHadamard: false,
  });
  assert.deepEqual(parseMethodId("w8a8-fp8").recipe.stages, [
    { kind: "fp8" },
    { kind: "act", format: "fp8" },
  ]);
  assert.equal(parseMethodId("w8a8-int8").transform, undefined);
  // a low-rank correction keeps the base method's transform
  assert.deepEqual(
    parseMethodId("quarot-w4a4+eora-r8").transform,
    parseMethodId("quarot-w4a4").transform,
  );
  for (const id of ["w8a8-int8", "quarot-w4a4", "mxfp4-w4a4", "nvfp4-w4a4", "w8a8-int8-static"]) {
    assert.equal(parseMethodId(id).default, false, id);
  }
});

Deno.test("the KV cache methods carry QuaRot's 4-bit cache and rotate queries and keys where named", () => {
  const kv4 = { format: "int4", asymmetric: true, clipRatio: 0.95 };
  const m = parseMethodId("quarot-w4a4-kv4");
  assert.deepEqual(m.kvCache, kv4);
  assert.deepEqual(m.transform, { kind: "quarot", onlineHadamard: true, qkHadamard: true });
  assert.deepEqual(m.recipe.stages, parseMethodId("quarot-w4a4").recipe.stages);
  assert.deepEqual(parseMethodId("quarot-w4a4-kv4-noqk").transform, {
    kind: "quarot",
    onlineHadamard: true,
  });
  assert.deepEqual(parseMethodId("w16a16-kv4").kvCache, kv4);
  assert.equal(parseMethodId("w16a16-kv4").transform, undefined);
  assert.deepEqual(parseMethodId("w16a16-kv4").recipe.stages, []);
  assert.deepEqual(parseMethodId("quarot-w16a16-kv4").transform, m.transform);
  assert.equal(parseMethodId("quarot-w4a4").kvCache, undefined);
  // a low-rank correction keeps the base method's KV cache
  assert.deepEqual(parseMethodId("quarot-w4a4-kv4+eora-r8").kvCache, kv4);
});
