import assert from "node:assert/strict";
import { hessian } from "../../hessian/hessian.ts";
import { layerError } from "../../hessian/layer_error.ts";
import { obsSolve } from "../../hessian/obs.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import { gptq } from "../../quantizers/gptq.ts";
import { mxQuantize } from "../../quantizers/mx.ts";
import { fp8Quantize } from "../../quantizers/fp8_quantize.ts";
import { decodeE2M1 } from "../../core/fp4.ts";
import { mxScaleValue } from "../../core/scaled_float.ts";
import { correlatedInputs, randomWeight } from "./_correlated.ts";

const x = correlatedInputs(512, 256, 1);
const h = hessian(x);
const w = randomWeight(64, 256, 2);

Deno.test("gptq() over MXFP4, NVFP4 and FP8 has a lower layer error than round to nearest on correlated inputs", async () => {
  const lines: string[] = [];
  for (const format of ["mxfp4", "nvfp4"] as const) {
    for (const staticGroups of [false, true]) {
      const g = layerError(w, dequantize(await gptq(w, h, { format, staticGroups })), h);
      const r = layerError(w, dequantize(await mxQuantize(w, { format })), h);
      lines.push(
        `${format}${staticGroups ? " static" : ""}: gptq ${g.toExponential(3)}, rtn ${
          r.toExponential(3)
        }`,
      );
      assert.ok(g < r, lines.at(-1));
    }
  }
  for (const granularity of ["channel", "tensor"] as const) {
    const g = layerError(w, dequantize(await gptq(w, h, { format: "fp8", granularity })), h);
    const r = layerError(w, dequantize(await fp8Quantize(w, { granularity })), h);
    lines.push(`fp8 ${granularity}: gptq ${g.toExponential(3)}, rtn ${r.toExponential(3)}`);
    assert.ok(g < r, lines.at(-1));
  }
  console.log(lines.join("\n"));
});

Deno.test("gptq() over a microscaling format keeps every value on its block's E2M1 grid and equals the solver's weights", async () => {
  for (const format of ["mxfp4", "nvfp4"] as const) {
    const q = await gptq(w, h, { format });
    assert.equal(q.kind, "mx");
    const bs = format === "mxfp4" ? 32 : 16, blocks = 256 / bs;
    assert.equal(q.scales.length, 64 * blocks);
    const back = dequantize(q).data;
    for (let r = 0; r < 64; r++) {
      for (let c = 0; c < 256; c++) {
        const code = q.codes[r * 256 + c]!;
        assert.ok(code < 16);
        const m = mxScaleValue(format, q.scales[r * blocks + Math.floor(c / bs)]!, q.tensorScale);
        assert.equal(back[r * 256 + c], Math.fround(decodeE2M1(code) * m));
      }
    }
    const res = await obsSolve(w, h, { decider: { kind: "float-grid", format }, backend: "cpu" });
    assert.deepEqual(res.weight.data, back);
  }
  const f = await gptq(w, h, { format: "fp8" });
  assert.equal(f.kind, "fp8");
  assert.equal(f.scales.length, 64);
});

Deno.test("gptq() over NVFP4 fits the tensor scale on the original weights", async () => {
  const q = await gptq(w, h, { format: "nvfp4" });
  const r = await mxQuantize(w, { format: "nvfp4" });
  assert.equal(q.tensorScale, r.tensorScale);
});

Deno.test("gptq() over a format with act-order needs static block scales (those of mxQuantize), and refuses the GPU and bits", async () => {
  await assert.rejects(
    () => gptq(w, h, { format: "mxfp4", actOrder: true }),
    /a permuted order needs 'staticGroups'/,
  );
  const q = await gptq(w, h, { format: "mxfp4", actOrder: true, staticGroups: true });
  const rtn = await mxQuantize(w, { format: "mxfp4" });
  assert.deepEqual(q.scales, rtn.scales); // static scales are the round-to-nearest ones
  assert.ok(layerError(w, dequantize(q), h) < layerError(w, dequantize(rtn), h));
  await assert.rejects(
    () => gptq(w, h, { format: "nvfp4", backend: "webgpu" }),
    /'backend' "webgpu" does not support the "float-grid" decider/,
  );
  await assert.rejects(
    () => gptq(w, h, { format: "fp8", bits: 4 } as unknown as { format: "fp8" }),
    /'bits' does not apply with 'format' fp8/,
  );
  await assert.rejects(
    () => gptq(w, h, { format: "mxfp4", granularity: "tensor" }),
    /'granularity' applies to "fp8" only/,
  );
  await assert.rejects(
    () => gptq(w, h, { format: "int4" as "fp8" }),
    /'format' must be "mxfp4", "nvfp4" or "fp8": current value is int4/,
  );
});
