import assert from "node:assert/strict";
import { tensor } from "../../core/tensor.ts";
import { prng } from "../../core/prng.ts";
import { hessian } from "../../hessian/hessian.ts";
import { layerError } from "../../hessian/layer_error.ts";
import { compressLinear, higgsGroupSize } from "../../pipeline/compress_linear.ts";
import { addLowRank } from "../../quantizers/low_rank_factors.ts";
import { correlatedInputs } from "../quantizers/_correlated.ts";
import { assertClose } from "../_helpers.ts";

const R = 16, C = 64;
const rng = prng(5);
const X = tensor("f32", [256, C], Float32Array.from({ length: 256 * C }, () => rng.normal()));
const H = hessian(X);
const W = tensor("f32", [R, C], Float32Array.from({ length: R * C }, () => rng.normal()));

Deno.test("pruned weights stay exactly zero through a later quantizer, and storage counts both", async () => {
  const c = await compressLinear(W, H, [
    { kind: "wanda", structure: { kind: "nm", n: 2, m: 4 } },
    { kind: "rtn", bits: 4 },
  ]);
  assert.equal(c.density, 0.5);
  for (let i = 0; i < c.mask!.length; i++) {
    if (c.mask![i] === 0) assert.equal(c.weight.data[i], 0);
  }
  // Half the 4-bit codes, an f16 scale and a 4-bit zero per row, 2-bit index per kept weight.
  assertClose(c.bitsPerWeight, 0.5 * 4 + 20 / C + 1, { atol: 1e-12 });
  assert.deepEqual(c.stages, ["wanda", "rtn"]);
});

Deno.test("joint SparseGPT with a grid gives zeros where pruned and grid values elsewhere", async () => {
  const c = await compressLinear(W, H, [
    { kind: "sparsegpt", structure: { kind: "unstructured", sparsity: 0.5 }, grid: { bits: 3 } },
  ]);
  const q = c.quantized!;
  assert.equal(q.kind, "uniform");
  assertClose(c.density, 0.5, { atol: 1e-12 });
  assertClose(c.bitsPerWeight, 0.5 * 3 + 19 / C + 1, { atol: 1e-12 });
  // Every kept weight is scale·(code − zero) of its row.
  if (q.kind !== "uniform") return;
  for (let r = 0; r < R; r++) {
    for (let k = 0; k < C; k++) {
      const v = q.scales[r]! * (q.codes[r * C + k]! - q.zeros[r]!);
      assertClose(c.weight.data[r * C + k]!, c.mask![r * C + k] ? v : 0, { atol: 1e-6 });
    }
  }
});

Deno.test("a Hadamard rotation before RTN lowers the layer error of a weight with outliers", async () => {
  const w = Float32Array.from(W.data);
  for (let r = 0; r < R; r++) w[r * C + ((r * 7) % C)] = 40; // one large outlier per row
  const Wo = tensor("f32", [R, C], w);
  const plain = await compressLinear(Wo, H, [{ kind: "rtn", bits: 3 }]);
  const rotated = await compressLinear(Wo, H, [{ kind: "rotate" }, { kind: "rtn", bits: 3 }]);
  assert.ok(
    rotated.layerError < 0.5 * plain.layerError,
    `${rotated.layerError} vs ${plain.layerError}`,
  );
  assert.equal(rotated.bitsPerWeight, plain.bitsPerWeight);
});

Deno.test("compressLinear() needs a Hessian only for calibration-based stages", async () => {
  await assert.rejects(
    () => compressLinear(W, null, [{ kind: "gptq", bits: 4 }]),
    /need a Hessian/,
  );
  const c = await compressLinear(W, null, [{ kind: "higgs", bits: 4 }]);
  assert.ok(Number.isNaN(c.layerError));
  assertClose(c.bitsPerWeight, 4 + 16 / 64, { atol: 1e-12 });
  assert.deepEqual([higgsGroupSize(64), higgsGroupSize(172), higgsGroupSize(768)], [64, 4, 128]);
});

Deno.test("MXFP4, NVFP4 and FP8 stages count 4 + 8/32, 4 + 8/16 + 32/(rows·cols) and 8 + 32/cols bits per weight", async () => {
  const mx = await compressLinear(W, null, [{ kind: "mx", format: "mxfp4" }]);
  assert.equal(mx.bitsPerWeight, 4 + 8 / 32);
  assert.equal(mx.quantized?.kind, "mx");
  const nv = await compressLinear(W, null, [{ kind: "mx", format: "nvfp4" }]);
  assertClose(nv.bitsPerWeight, 4 + 8 / 16 + 32 / (R * C), { atol: 1e-12 });
  const f8 = await compressLinear(W, null, [{ kind: "fp8" }]);
  assertClose(f8.bitsPerWeight, 8 + 32 / C, { atol: 1e-12 });
  const f8t = await compressLinear(W, null, [{ kind: "fp8", granularity: "tensor" }]);
  assertClose(f8t.bitsPerWeight, 8 + 32 / (R * C), { atol: 1e-12 });
});

Deno.test("a float-format stage with method gptq has a lower layer error than round to nearest", async () => {
  for (
    const stage of [
      { kind: "mx", format: "mxfp4" },
      { kind: "mx", format: "nvfp4" },
      { kind: "fp8" },
    ] as const
  ) {
    const rtn = await compressLinear(W, H, [stage]);
    const g = await compressLinear(W, H, [{ ...stage, method: "gptq" }]);
    assert.ok(
      g.layerError < rtn.layerError,
      `${JSON.stringify(stage)}: ${g.layerError} ≥ ${rtn.layerError}`,
    );
    assert.equal(g.bitsPerWeight, rtn.bitsPerWeight);
  }
  await assert.rejects(
    () => compressLinear(W, null, [{ kind: "mx", format: "mxfp4", method: "gptq" }]),
    /need a Hessian/,
  );
  await assert.rejects(
    () => compressLinear(W, H, [{ kind: "mx", format: "mxfp4", actOrder: true }]),
    /need method "gptq"/,
  );
});

const XC = correlatedInputs(512, C, 6);
const HC = hessian(XC);

Deno.test("an eora stage after GPTQ stands for Ŵ + B·A, lowers the layer error and counts the factors", async () => {
  const plain = await compressLinear(W, HC, [{ kind: "gptq", bits: 3 }], { backend: "cpu" });
  const c = await compressLinear(W, HC, [{ kind: "gptq", bits: 3 }, { kind: "eora", rank: 4 }], {
    backend: "cpu",
  });
  assert.deepEqual(c.stages, ["gptq", "eora"]);
  const lr = c.lowRank!;
  assert.equal(lr.kind, "eora");
  assert.deepEqual([lr.b.shape, lr.a.shape], [[R, 4], [4, C]]);
  assert.deepEqual(Array.from(c.weight.data), Array.from(addLowRank(plain.weight, lr).data));
  // float16 factors: 16 bits for each of r·(out + in) values, over out·in weights.
  assertClose(c.bitsPerWeight, plain.bitsPerWeight + (16 * 4 * (R + C)) / (R * C), { atol: 1e-12 });
  assertClose(c.layerError, layerError(W, c.weight, HC), { rtol: 1e-9, atol: 0 });
  assert.ok(c.layerError < 0.5 * plain.layerError, `${c.layerError} vs ${plain.layerError}`);
  // The eora stage saw the Hessian it was given: its loss before is GPTQ's error.
  let whw = 0;
  for (let r = 0; r < R; r++) {
    for (let i = 0; i < C; i++) {
      for (let j = 0; j < C; j++) {
        whw += W.data[r * C + i]! * HC.xtx[i * C + j]! * W.data[r * C + j]!;
      }
    }
  }
  assertClose(lr.stats.errorBefore / whw, plain.layerError, { rtol: 1e-6, atol: 0 });
});

Deno.test("an eora stage has a lower layer error than an svd stage of the same rank", async () => {
  for (const rank of [2, 8]) {
    const [e, s] = await Promise.all(
      (["eora", "svd"] as const).map((kind) =>
        compressLinear(W, HC, [{ kind: "rtn", bits: 3 }, { kind, rank }])
      ),
    );
    assert.equal(s!.lowRank!.kind, "svd");
    assert.ok(e!.layerError < s!.layerError, `rank ${rank}: ${e!.layerError} vs ${s!.layerError}`);
  }
  // An svd stage reads no Hessian.
  const noH = await compressLinear(W, null, [{ kind: "rtn", bits: 3 }, { kind: "svd", rank: 2 }]);
  assert.ok(Number.isNaN(noH.layerError) && noH.lowRank !== undefined);
});

Deno.test("a low-rank stage after a rotation corrects in the original basis", async () => {
  const stages = [{ kind: "rotate" }, { kind: "rtn", bits: 3 }] as const;
  const plain = await compressLinear(W, HC, stages);
  const c = await compressLinear(W, HC, [...stages, { kind: "eora", rank: 4 }]);
  assertClose(c.weight.data, addLowRank(plain.weight, c.lowRank!).data, { atol: 1e-6 });
  assert.ok(c.layerError < 0.5 * plain.layerError, `${c.layerError} vs ${plain.layerError}`);
});

Deno.test("eora after 2:4 SparseGPT keeps Ŵ's mask and counts the mask and quantized factors", async () => {
  const twoFour = { kind: "nm", n: 2, m: 4 } as const;
  const plain = await compressLinear(W, HC, [{ kind: "sparsegpt", structure: twoFour }], {
    backend: "cpu",
  });
  const c = await compressLinear(W, HC, [
    { kind: "sparsegpt", structure: twoFour },
    { kind: "eora", rank: 4, quantize: { bits: 4, groupSize: 32 } },
  ], { backend: "cpu" });
  assert.equal(c.density, 0.5);
  assert.deepEqual(c.mask, plain.mask);
  const lr = c.lowRank!;
  assert.ok(lr.quantized !== undefined);
  // 4-bit codes; f16 scale and 4-bit zero per group: B one per row, A two per rank row.
  const factorBits = 4 * 4 * (R + C) + (R + 4 * 2) * 20;
  assertClose(c.bitsPerWeight, plain.bitsPerWeight + factorBits / (R * C), { atol: 1e-12 });
  assert.ok(c.layerError < plain.layerError);
});

Deno.test("compressLinear() puts a low-rank stage last, after a compressor", async () => {
  const bad: Parameters<typeof compressLinear>[2][] = [
    [{ kind: "eora", rank: 2 }],
    [{ kind: "rotate" }, { kind: "svd", rank: 2 }],
    [{ kind: "eora", rank: 2 }, { kind: "rtn", bits: 4 }],
  ];
  for (const stages of bad) {
    await assert.rejects(
      () => compressLinear(W, H, stages),
      /must be the last stage and follow a pruner or quantizer/,
    );
  }
  await assert.rejects(
    () => compressLinear(W, H, [{ kind: "rtn", bits: 4 }, { kind: "eora", rank: 17 }]),
    /'rank' must be an integer in \[1, min\(rows, cols\) = 16\]/,
  );
});

Deno.test("an spqr stage stands for dequantize(spqr()), counts its bits and beats GPTQ 3-bit per channel", async () => {
  const x = correlatedInputs(512, C, 9);
  const h = hessian(x);
  const c = await compressLinear(W, h, [{ kind: "spqr", bits: 3, groupSize: 16 }]);
  const q = c.quantized!;
  assert.equal(q.kind, "spqr");
  if (q.kind !== "spqr") return;
  assertClose(c.bitsPerWeight, q.stats.bitsPerWeight, { atol: 1e-12 });
  // 3 + 6/16 + 64/256 + 16/rows (the order) + 32 per outlier.
  assertClose(c.bitsPerWeight, 3 + 6 / 16 + 64 / 256 + 16 / R + (32 * q.stats.outliers) / (R * C), {
    atol: 1e-12,
  });
  assertClose(c.layerError, layerError(W, c.weight, h), { rtol: 1e-9 });
  const g = await compressLinear(W, h, [{ kind: "gptq", bits: 3 }]);
  assert(c.layerError < g.layerError, `${c.layerError} vs GPTQ ${g.layerError}`);
  await assert.rejects(
    () => compressLinear(W, h, [{ kind: "spqr", bits: 0 }]),
    /'bits' must be an integer in \[1, 8\]/,
  );
});
