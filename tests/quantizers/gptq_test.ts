import assert from "node:assert/strict";
import { tensor } from "../../core/tensor.ts";
import { hessian } from "../../hessian/hessian.ts";
import { layerError } from "../../hessian/layer_error.ts";
import { obsSolve } from "../../hessian/obs.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import { gptq } from "../../quantizers/gptq.ts";
import { rtn } from "../../quantizers/rtn.ts";
import { correlatedInputs, randomWeight } from "./_correlated.ts";

const x = correlatedInputs(512, 256, 1);
const h = hessian(x);
const w = randomWeight(128, 256, 2);

Deno.test("gptq() has a lower layer error than rtn() on correlated inputs at 4, 3 and 2 bits", async () => {
  const lines: string[] = [];
  for (const bits of [4, 3, 2]) {
    for (const groupSize of [-1, 32, 128]) {
      const g = layerError(w, dequantize(await gptq(w, h, { backend: "cpu", bits, groupSize })), h);
      const r = layerError(w, dequantize(await rtn(w, { bits, groupSize })), h);
      lines.push(
        `${bits} bits, group ${groupSize}: gptq ${g.toExponential(3)}, rtn ${r.toExponential(3)}`,
      );
      assert.ok(g < r, lines.at(-1));
    }
  }
  console.log(lines.join("\n"));
});

Deno.test("act-order lowers gptq()'s layer error on inputs with outlier channels", async () => {
  for (const [bits, groupSize] of [[4, -1], [3, -1], [3, 128]] as const) {
    const plain = layerError(
      w,
      dequantize(await gptq(w, h, { backend: "cpu", bits, groupSize })),
      h,
    );
    const ordered = layerError(
      w,
      dequantize(await gptq(w, h, { backend: "cpu", bits, groupSize, actOrder: true })),
      h,
    );
    assert.ok(
      ordered < plain,
      `${bits} bits, group ${groupSize}: act-order ${ordered}, plain ${plain}`,
    );
  }
});

Deno.test("16-bit gptq() returns the weights to within 1e-4 relative error", async () => {
  for (const groupSize of [-1, 64]) {
    const back = dequantize(
      await gptq(w, h, { backend: "cpu", bits: 16, groupSize, actOrder: true }),
    );
    let num = 0, den = 0;
    for (let i = 0; i < back.data.length; i++) {
      num += (back.data[i]! - w.data[i]!) ** 2;
      den += w.data[i]! ** 2;
    }
    assert.ok(Math.sqrt(num / den) < 1e-4, `relative error ${Math.sqrt(num / den)}`);
  }
});

Deno.test("gptq() is deterministic: the same seeded inputs give bit-identical results", async () => {
  const again = hessian(correlatedInputs(512, 256, 1));
  const a = await gptq(w, h, { backend: "cpu", bits: 3, groupSize: 32, actOrder: true });
  const b = await gptq(randomWeight(128, 256, 2), again, {
    backend: "cpu",
    bits: 3,
    groupSize: 32,
    actOrder: true,
  });
  assert.deepEqual(a.codes, b.codes);
  assert.deepEqual(a.scales, b.scales);
  assert.deepEqual(a.zeros, b.zeros);
  assert.deepEqual(a.perm, b.perm);
});

Deno.test("dequantize(gptq()) is exactly the solver's weight, and codes fit in the bits", async () => {
  const opts = { bits: 3, groupSize: 48, actOrder: true, staticGroups: true } as const;
  const q = await gptq(w, h, { ...opts, backend: "cpu" });
  const solved = await obsSolve(w, h, {
    backend: "cpu",
    actOrder: true,
    decider: { kind: "grid", grid: { bits: 3, groupSize: 48 }, staticGroups: true },
  });
  assert.deepEqual(dequantize(q).data, solved.weight.data);
  assert.ok(q.codes.every((c) => c < 8));
  assert.equal(q.scales.length, 128 * Math.ceil(256 / 48));
  assert.ok(q.perm instanceof Int32Array);
  assert.equal(q.stats.deadColumns, 0);
  assert.ok(q.stats.damping! > 0 && q.stats.seconds >= 0);
});

Deno.test("gptq() completes on a singular Hessian (fewer tokens than columns, dead channels)", async () => {
  const few = correlatedInputs(32, 256, 3);
  for (let t = 0; t < 32; t++) few.data[t * 256 + 10] = few.data[t * 256 + 200] = 0;
  const hs = hessian(few);
  const q = await gptq(w, hs, { backend: "cpu", bits: 4, groupSize: 64, actOrder: true });
  assert.equal(q.stats.deadColumns, 2);
  const back = dequantize(q);
  assert.ok(back.data.every(Number.isFinite));
  assert.ok(
    layerError(w, back, hs) <
      layerError(w, dequantize(await rtn(w, { bits: 4, groupSize: 64 })), hs),
  );
});

Deno.test("gptq() rejects bad bits, group sizes, shapes and non-finite values, naming the argument", async () => {
  await assert.rejects(
    gptq(w, h, { backend: "cpu", bits: 0 }),
    /'bits' must be an integer in \[1, 16\]/,
  );
  await assert.rejects(gptq(w, h, { backend: "cpu", bits: 17 }), RangeError);
  await assert.rejects(gptq(w, h, { backend: "cpu", bits: 4, groupSize: 0 }), /'groupSize'/);
  await assert.rejects(
    gptq(w, h, { backend: "cpu", bits: 4, staticGroups: true }),
    /'staticGroups' needs groups/,
  );
  await assert.rejects(
    gptq(randomWeight(4, 100, 1), h, { backend: "cpu", bits: 4 }),
    /256 columns/,
  );
  const bad = w.data.slice();
  bad[7] = NaN;
  await assert.rejects(
    gptq(tensor("f32", [128, 256], bad), h, { bits: 4 }),
    /'weight' must be finite/,
  );
  const badX = x.data.slice(0, 256 * 4);
  badX[3] = Infinity;
  assert.throws(() => hessian(tensor("f32", [4, 256], badX)), /'x' must be finite/);
  await assert.rejects(rtn(w, { bits: 9.5 }), /'bits'/);
});
