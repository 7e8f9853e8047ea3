import assert from "node:assert/strict";
import { tensor } from "../../core/tensor.ts";
import type { Tensor } from "../../core/tensor.ts";
import { prng } from "../../core/prng.ts";
import { hessian } from "../../hessian/hessian.ts";
import { gptq } from "../../quantizers/gptq.ts";
import { rtn } from "../../quantizers/rtn.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import { compressModel } from "../../pipeline/compress_model.ts";
import type { CompressedLinear } from "../../pipeline/compress_linear.ts";
import type { CompressibleBlock, CompressibleModel } from "../../pipeline/model.ts";
import { matchesModule, stagesFor, validateRecipe } from "../../pipeline/recipe.ts";
import type { Recipe } from "../../pipeline/recipe.ts";
import { assertClose } from "../_helpers.ts";

const D = 8, H = 12;

/** x·Wᵀ for x [T, in], W [out, in], in float64 then f32. */
function mm(x: Tensor<"f32">, w: Tensor<"f32">): Float32Array {
  const T = x.shape[0]!, inp = x.shape[1]!, out = w.shape[0]!;
  const y = new Float32Array(T * out);
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < out; o++) {
      let s = 0;
      for (let i = 0; i < inp; i++) s += x.data[t * inp + i]! * w.data[o * inp + i]!;
      y[t * out + o] = s;
    }
  }
  return y;
}

/** A two-linear residual block: y = x + relu(x·Aᵀ)·Bᵀ (A [H, D] then B [D, H]). */
function toyBlock(name: string, seed: number, calls: { n: number }): CompressibleBlock {
  const rng = prng(seed);
  const w = (r: number, c: number) =>
    tensor("f32", [r, c], Float32Array.from({ length: r * c }, () => rng.normal() / Math.sqrt(c)));
  return {
    name,
    linears: { a: w(H, D), b: w(D, H) },
    groups: [["a"], ["b"]],
    forward(x, weights, options = {}) {
      calls.n++;
      const T = x.shape[0]!;
      options.onInput?.("a", x);
      if (options.stopAfter?.size === 1 && options.stopAfter.has("a")) return null;
      const u = mm(x, weights.a!).map((v) => Math.max(v, 0));
      const ut = tensor("f32", [T, H], u);
      options.onInput?.("b", ut);
      if (options.stopAfter?.has("b")) return null;
      const d = mm(ut, weights.b!);
      return tensor("f32", [T, D], x.data.map((v, i) => v + d[i]!));
    },
  };
}

function toyModel(calls = { n: 0 }): CompressibleModel {
  const emb = prng(99);
  const table = Float32Array.from({ length: 16 * D }, () => emb.normal());
  return {
    blocks: [toyBlock("blocks.0", 1, calls), toyBlock("blocks.1", 2, calls)],
    embed: (tokens) => {
      const x = new Float32Array(tokens.length * D);
      tokens.forEach((id, t) => x.set(table.subarray(id * D, id * D + D), t * D));
      return tensor("f32", [tokens.length, D], x);
    },
  };
}

const calib = Array.from(
  { length: 6 },
  (_, s) => Array.from({ length: 20 }, (_, t) => (s * 7 + t * 3) % 16),
);

Deno.test("compressModel() compresses true-sequentially: each linear's Hessian comes from the compressed earlier ones", async () => {
  const model = toyModel();
  const recipe: Recipe = { stages: [{ kind: "gptq", bits: 3 }] };
  const res = await compressModel(model, calib, recipe);
  // Oracle: replay the pipeline by hand with gptq() on explicitly built Hessians.
  let xs = calib.map((s) => model.embed(s));
  for (const block of model.blocks) {
    const cat = (parts: Tensor<"f32">[], w: number) => {
      const rows = parts.reduce((s, p) => s + p.shape[0]!, 0);
      const data = new Float32Array(rows * w);
      let o = 0;
      for (const p of parts) {
        data.set(p.data, o);
        o += p.data.length;
      }
      return tensor("f32", [rows, w], data);
    };
    const qa = dequantize(await gptq(block.linears.a!, hessian(cat(xs, D)), { bits: 3 }));
    const mid = xs.map((x) =>
      tensor("f32", [x.shape[0]!, H], mm(x, qa).map((v) => Math.max(v, 0)))
    );
    const qb = dequantize(await gptq(block.linears.b!, hessian(cat(mid, H)), { bits: 3 }));
    assertClose(res.modules.get(`${block.name}.a`)!.weight.data, qa.data, {
      atol: 1e-6,
      rtol: 1e-6,
    });
    assertClose(res.modules.get(`${block.name}.b`)!.weight.data, qb.data, {
      atol: 1e-6,
      rtol: 1e-6,
    });
    xs = xs.map((x) => block.forward(x, { a: qa, b: qb })!);
  }
  // Storage: 3-bit codes plus an f16 scale and a 3-bit zero point per row.
  const a = res.modules.get("blocks.0.a")!;
  assertClose(a.bitsPerWeight, 3 + (16 + 3) / D, { atol: 1e-12 });
  assert.ok(a.layerError > 0 && a.layerError < 0.2);
});

Deno.test("with trueSequential false, every linear of a block sees the uncompressed block's inputs", async () => {
  const model = toyModel();
  const res = await compressModel(model, calib, { stages: [{ kind: "gptq", bits: 3 }] }, {
    trueSequential: false,
  });
  const block = model.blocks[0]!;
  const xs = calib.map((s) => model.embed(s));
  const rows = xs.reduce((s, x) => s + x.shape[0]!, 0);
  const mid = new Float32Array(rows * H);
  let o = 0;
  for (const x of xs) {
    const u = mm(x, block.linears.a!).map((v) => Math.max(v, 0));
    mid.set(u, o);
    o += u.length;
  }
  const qb = dequantize(
    await gptq(block.linears.b!, hessian(tensor("f32", [rows, H], mid)), { bits: 3 }),
  );
  assertClose(res.modules.get("blocks.0.b")!.weight.data, qb.data, { atol: 1e-6, rtol: 1e-6 });
  const sequential = await compressModel(model, calib, { stages: [{ kind: "gptq", bits: 3 }] });
  assert.notDeepEqual(sequential.modules.get("blocks.0.b")!.weight.data, qb.data);
  await assert.rejects(
    () => compressModel(model, calib, { stages: [] }, { trueSequential: "yes" as never }),
    /'trueSequential' must be a boolean/,
  );
});

Deno.test("compressModel() runs no forward pass for recipes without calibration-based stages", async () => {
  const calls = { n: 0 };
  const model = toyModel(calls);
  const res = await compressModel(model, calib, {
    stages: [{ kind: "rtn", bits: 4, groupSize: 4 }],
  });
  assert.equal(calls.n, 0);
  const expect = dequantize(await rtn(model.blocks[1]!.linears.b!, { bits: 4, groupSize: 4 }));
  assert.deepEqual(res.modules.get("blocks.1.b")!.weight.data, expect.data);
  assert.ok(Number.isNaN(res.modules.get("blocks.1.b")!.layerError));
});

Deno.test("overrides select modules by glob or RegExp and an empty stage list keeps the weight", async () => {
  const recipe: Recipe = {
    stages: [{ kind: "rtn", bits: 2 }],
    overrides: [
      { match: "*.b", stages: [{ kind: "rtn", bits: 8 }] },
      { match: /^blocks\.1\.a$/, stages: [] },
    ],
  };
  assert.deepEqual(stagesFor(recipe, "blocks.0.b"), [{ kind: "rtn", bits: 8 }]);
  assert.deepEqual(stagesFor(recipe, "blocks.1.a"), []);
  assert.ok(
    matchesModule("layers.10.wq", "layers.1*.wq") && !matchesModule("xlayers.1.wq", "layers.*"),
  );
  const model = toyModel();
  const res = await compressModel(model, calib, recipe);
  assert.equal(res.modules.get("blocks.1.a")!.weight, model.blocks[1]!.linears.a);
  assert.equal(res.modules.get("blocks.1.a")!.bitsPerWeight, 32);
  assertClose(res.modules.get("blocks.0.b")!.bitsPerWeight, 8 + 24 / H, { atol: 1e-12 });
  // Model-level bits: weight-count-weighted over compressed modules only.
  const n = H * D;
  assertClose(res.bitsPerWeight, ((2 + 18 / D) * n + 2 * (8 + 24 / H) * n) / (3 * n), {
    atol: 1e-12,
  });
});

Deno.test("a resumed run reuses the finished blocks and gives the same result", async () => {
  const model = toyModel();
  const recipe: Recipe = { stages: [{ kind: "sparsegpt", structure: { kind: "nm", n: 2, m: 4 } }] };
  const journal = new Map<string, CompressedLinear>();
  const full = await compressModel(model, calib, recipe, {
    onBlockDone: (b, mods) => {
      if (b === 0) { for (const m of mods) journal.set(m.name, m); }
    },
  });
  const calls = { n: 0 };
  const resumed = await compressModel(toyModel(calls), calib, recipe, { completed: journal });
  for (const [name, m] of full.modules) {
    assert.deepEqual(resumed.modules.get(name)!.weight.data, m.weight.data, name);
  }
  assert.equal(full.modules.get("blocks.1.b")!.density, 0.5);
  const partial = new Map([["blocks.0.a", journal.get("blocks.0.a")!]]);
  await assert.rejects(() => compressModel(model, calib, recipe, { completed: partial }), /partly/);
});

Deno.test("validateRecipe() names the bad stage kind or bits", () => {
  assert.throws(
    () => validateRecipe({ stages: [{ kind: "zip" } as never] }),
    /'kind' must be one of/,
  );
  assert.throws(
    () => validateRecipe({ stages: [{ kind: "rtn", bits: 0 }] }),
    /'bits'.*current value is 0/,
  );
  assert.throws(() => validateRecipe({ stages: "gptq" } as never), TypeError);
  assert.throws(
    () =>
      validateRecipe({
        stages: [{ kind: "gptq", bits: 4 }, {
          kind: "magnitude",
          structure: { kind: "nm", n: 2, m: 4 },
        }],
      }),
    /a quantizer \('gptq'\) must be the last stage: 'magnitude' follows it/,
  );
  assert.throws(
    () =>
      validateRecipe({
        stages: [{ kind: "wanda", structure: { kind: "nm", n: 2, m: 4 } }, { kind: "rotate" }],
      }),
    /'rotate' must be the first stage/,
  );
  assert.throws(
    () =>
      validateRecipe({
        stages: [{ kind: "gptq", bits: 3 }, { kind: "eora", rank: 8 }, { kind: "rtn", bits: 4 }],
      }),
    /a low-rank correction \('eora'\) must be the last stage: 'rtn' follows it/,
  );
  assert.throws(
    () => validateRecipe({ stages: [{ kind: "rotate" }, { kind: "svd", rank: 8 }] }),
    /'svd' corrects a compressed weight: it must follow a pruner or quantizer/,
  );
  assert.throws(
    () => validateRecipe({ stages: [{ kind: "gptq", bits: 3 }, { kind: "eora", rank: 0 }] }),
    /eora stage's 'rank' must be a positive integer: current value is 0/,
  );
  validateRecipe({ stages: [{ kind: "gptq", bits: 3 }, { kind: "eora", rank: 8 }] });
  validateRecipe({
    stages: [{ kind: "sparsegpt", structure: { kind: "nm", n: 2, m: 4 } }, {
      kind: "svd",
      rank: 8,
      quantize: { bits: 4 },
    }],
  });
  validateRecipe({
    stages: [{ kind: "rotate" }, { kind: "wanda", structure: { kind: "nm", n: 2, m: 4 } }, {
      kind: "gptq",
      bits: 4,
    }],
  });
});
