/**
 * SpQR against GPTQ on every linear layer of the real stories260K model, with
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
import { spqr } from "../../quantizers/spqr.ts";
import type { Tensor } from "../../core/tensor.ts";

Deno.test("spqr() w3 g16 beats gptq() w3 g16 with fewer bits, and its outliers lower the error, on every stories260K linear", async () => {
  const setup = await loadStories260K();
  if (!setup) return;
  const { model } = setup;
  const inputs = captureStories(setup, setup.stories.filter((s) => s.length > 600).slice(0, 8));
  const hessians = new Map<Tensor, Hessian>();
  for (let l = 0; l < model.config.nLayers; l++) {
    for (const name of LLAMA_LINEARS) {
      const x = inputs.get(l)![name]!;
      if (!hessians.has(x)) hessians.set(x, hessian(x));
      const h = hessians.get(x)!;
      const w = model.layers[l]![name];
      const at = `${l}.${name}`;
      const g = layerError(w, dequantize(await gptq(w, h, { bits: 3, groupSize: 16 })), h);
      const plain = await spqr(w, h, { outlierThreshold: Infinity });
      const withOutliers = await spqr(w, h);
      const e0 = layerError(w, dequantize(plain), h);
      const e1 = layerError(w, dequantize(withOutliers), h);
      // GPTQ w3 g16 costs 3 + 19/16 bits per weight.
      assert(plain.stats.bitsPerWeight < 3 + 19 / 16, `${at}: ${plain.stats.bitsPerWeight} bits`);
      assert(e0 < g, `${at}: spqr without outliers ${e0}, gptq w3 g16 ${g}`);
      assert(e1 < e0, `${at}: spqr with outliers ${e1}, without ${e0}`);
      assert(withOutliers.stats.outliers > 0);
    }
  }
});
