import assert from "node:assert/strict";
import { testGpu } from "../kernels/_gpu.ts";
import { syntheticModel } from "./_synthetic_model.ts";
import { dataFile, relError } from "../_helpers.ts";
import { llamaForward } from "../../models/forward.ts";
import { loadLlama2c } from "../../models/llama2c.ts";
import { quarot } from "../../models/quarot.ts";
import { llamaCompressible } from "../../models/compressible.ts";
import { decodeSession } from "../../models/generate.ts";
import type { LlamaModel } from "../../models/model.ts";

const tokens = [3, 9, 1, 7, 22, 5, 13, 2];

function check(model: LlamaModel, ids: number[], what: string): void {
  const want = llamaForward(model, ids);
  const cases: [boolean, boolean][] = [[true, true], [false, true], [true, false]];
  for (const [onlineHadamard, headHadamard] of cases) {
    const r = quarot(model, { seed: 3, onlineHadamard, headHadamard });
    const err = relError(llamaForward(r, ids), want);
    assert(err < 1e-5, `${what}, online ${onlineHadamard}, heads ${headHadamard}: error ${err}`);
    assert.equal(r.layers[0]!.onlineHadamard !== undefined, onlineHadamard);
    assert(r.layers[0]!.attnNorm.every((g) => g === 1));
    assert.notDeepEqual(r.layers[0]!.wq.data, model.layers[0]!.wq.data);
  }
}

Deno.test("quarot() leaves the float model's logits unchanged (widths 32 and 48, GQA, biases, head norms)", () => {
  check(syntheticModel({}, 21, 0.3), tokens, "plain");
  check(syntheticModel({ qkvBias: true, qkNorm: true }, 22, 0.3), tokens, "qwen-like");
  // width 40 and hidden 44 have no Hadamard order: the Kronecker fallback
  check(
    syntheticModel({ dim: 40, nHeads: 4, nKvHeads: 2, hiddenDim: 44 }, 23, 0.3),
    tokens,
    "fallback",
  );
});

Deno.test("quarot() leaves stories260K's logits unchanged (hidden width 172: Kronecker fallback)", async () => {
  const path = dataFile("stories260K/stories260K.bin");
  if (!path) return;
  check(await loadLlama2c(path), [1, 403, 407, 261, 378, 10, 9], "stories260K");
});

Deno.test("quarot() names bad options", () => {
  const model = syntheticModel({}, 24);
  assert.throws(() => quarot(model, { seed: -1 }), /'seed' must be a non-negative integer/);
  assert.throws(
    () => quarot(model, { onlineHadamard: "yes" as unknown as boolean }),
    /'onlineHadamard' must be a boolean/,
  );
  assert.throws(
    () => quarot(model, { headHadamard: 1 as unknown as boolean }),
    /'headHadamard' must be a boolean/,
  );
});

Deno.test("a rotated model's calibration passes and decode session run on WebGPU", async () => {
  const r = quarot(syntheticModel({}, 25), { seed: 1 });
  if (!await testGpu()) return;
  // (their values against the CPU: tests/models/calibration_gpu_test.ts, generate_test.ts)
  const runner = await llamaCompressible(r).calibrationRunner!([[1, 2, 3]], { backend: "webgpu" });
  assert(runner !== null);
  runner.dispose();
  const session = await decodeSession(r, { backend: "webgpu", maxTokens: 8 });
  assert.equal(session.backend, "webgpu");
  session.dispose();
});
