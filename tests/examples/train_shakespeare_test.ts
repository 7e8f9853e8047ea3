import assert from "node:assert/strict";
import { SHAKESPEARE_LEARNING_RATES, trainCharMlp } from "../../examples/train_shakespeare.ts";
import { adam } from "../../optim/adam.ts";
import { microAdam } from "../../optim/micro_adam.ts";
import { dataFile } from "../_helpers.ts";

Deno.test("MicroAdam trains the Shakespeare character MLP to within 5% of Adam's loss with under a quarter of its state", () => {
  const path = dataFile("text/tinyshakespeare.txt");
  if (path === null) return;
  const text = Deno.readTextFileSync(path);
  // The example, shortened from 4,000 to 2,000 steps.
  const options = { steps: 2000, evalEvery: 2000, evalSize: 1000 };
  const a = trainCharMlp(text, {
    ...options,
    optimizer: adam({ learningRate: SHAKESPEARE_LEARNING_RATES.adam }) as never,
  });
  const m = trainCharMlp(text, {
    ...options,
    optimizer: microAdam({ learningRate: SHAKESPEARE_LEARNING_RATES.microAdam }) as never,
  });
  const la = a.val.at(-1)!.loss, lm = m.val.at(-1)!.loss;
  console.log(
    `val loss: Adam ${la.toFixed(4)}, MicroAdam ${lm.toFixed(4)}; state bytes/param: ` +
      `Adam ${a.stateBytesPerParam}, MicroAdam ${m.stateBytesPerParam.toFixed(3)}`,
  );
  // Both learn: from ln(65) ≈ 4.2 nats/char to well under the unigram entropy (~3.3).
  assert.ok(la < 2.6 && lm < 2.6, `Adam ${la}, MicroAdam ${lm}`);
  assert.ok(lm <= 1.05 * la, `MicroAdam ${lm} vs Adam ${la}`);
  assert.equal(a.stateBytesPerParam, 8);
  assert.ok(m.stateBytesPerParam <= a.stateBytesPerParam / 4, `${m.stateBytesPerParam}`);
});
