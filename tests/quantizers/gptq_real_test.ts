/**
 * GPTQ against RTN on every linear layer of the real stories260K model, with
 * activations captured on TinyStories text (skipped, with the reason printed,
 * when the shared data is absent).
 */

import assert from "node:assert/strict";
import { captureStories, loadStories260K } from "../_real_layers.ts";
import { LLAMA_LINEARS } from "../../models/model.ts";
import { type Hessian, hessian } from "../../hessian/hessian.ts";
import { layerError } from "../../hessian/layer_error.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import { gptq } from "../../quantizers/gptq.ts";
import { rtn } from "../../quantizers/rtn.ts";
import type { Tensor } from "../../core/tensor.ts";

Deno.test("gptq() beats rtn() at 4 and 3 bits on every stories260K linear layer (TinyStories activations)", async () => {
  const setup = await loadStories260K();
  if (!setup) return;
  const { model } = setup;
  // 8 calibration sequences of 128 tokens, from the start of separate stories.
  const inputs = captureStories(setup, setup.stories.filter((s) => s.length > 600).slice(0, 8));
  const rows: string[] = [
    "layer error ‖(W−Ŵ)X‖²/‖WX‖², gptq / rtn, per channel (g-1) and groups of 32 (g32)",
    "layer | 4 bits g-1          | 4 bits g32          | 3 bits g-1          | 3 bits g32",
  ];
  const hessians = new Map<Tensor, Hessian>();
  for (let l = 0; l < model.config.nLayers; l++) {
    for (const name of LLAMA_LINEARS) {
      const x = inputs.get(l)![name]!;
      if (!hessians.has(x)) hessians.set(x, hessian(x));
      const h = hessians.get(x)!;
      const w = model.layers[l]![name];
      const cells: string[] = [];
      for (const bits of [4, 3]) {
        for (const groupSize of [-1, 32]) {
          const g = layerError(
            w,
            dequantize(await gptq(w, h, { backend: "cpu", bits, groupSize })),
            h,
          );
          const r = layerError(w, dequantize(await rtn(w, { bits, groupSize })), h);
          cells.push(`${g.toExponential(2)} / ${r.toExponential(2)}`);
          assert.ok(g < r, `${l}.${name} ${bits} bits group ${groupSize}: gptq ${g}, rtn ${r}`);
        }
      }
      rows.push(`${`${l}.${name}`.padEnd(5)} | ${cells.join(" | ")}`);
    }
  }
  console.log(rows.join("\n"));
});
