import assert from "node:assert/strict";
import { loadGptqCheckpoint, saveGptqCheckpoint } from "../../quantizers/gptq_checkpoint_file.ts";
import type { QuantizedWeight } from "../../quantizers/quantized_weight.ts";
import { prng } from "../../core/prng.ts";

function layer(seed: number, bits = 4): QuantizedWeight {
  const g = prng(seed);
  const rows = 8, cols = 48, groupSize = 16, groups = 3;
  return {
    kind: "uniform",
    shape: [rows, cols],
    bits,
    groupSize,
    symmetric: true,
    codes: new Uint8Array(rows * cols).map(() => g.int(2 ** bits)),
    scales: new Float32Array(rows * groups).map(() => Math.fround(0.125 * (1 + g.int(8)))),
    zeros: new Float32Array(rows * groups).fill(2 ** (bits - 1)),
    gIdx: new Int32Array(cols).map((_, c) => Math.floor(c / groupSize)),
    stats: { seconds: 0 },
  };
}

Deno.test("saveGptqCheckpoint() writes a file that loadGptqCheckpoint() reads back, v1 and v2", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const version of [1, 2] as const) {
      const layers = {
        "model.layers.0.mlp.up_proj": layer(1),
        "model.layers.0.mlp.down_proj": layer(2),
      };
      const path = `${dir}/gptq_v${version}.safetensors`;
      const config = await saveGptqCheckpoint(path, layers, { version });
      assert.equal(config.checkpoint_format, version === 1 ? "gptq" : "gptq_v2");
      const { layers: back, config: read } = await loadGptqCheckpoint(path);
      assert.deepEqual(read, config);
      for (const [name, q] of Object.entries(layers)) {
        const r = back.get(name)!;
        assert.deepEqual(Array.from(r.codes), Array.from(q.codes));
        assert.deepEqual(r.zeros, q.zeros);
        assert.deepEqual(r.scales, q.scales); // multiples of 1/8 are exact in f16
        assert.deepEqual(r.gIdx, q.gIdx);
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("saveGptqCheckpoint() refuses mixed configs and leaves no file behind", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/mixed.safetensors`;
    await assert.rejects(
      () => saveGptqCheckpoint(path, { a: layer(1, 4), b: layer(2, 8) }),
      /one quantization_config covers every layer/,
    );
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
