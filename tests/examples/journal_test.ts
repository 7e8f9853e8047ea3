import assert from "node:assert/strict";
import { tensor } from "../../core/tensor.ts";
import { openJournal } from "../../examples/demo/journal.ts";
import { readSafetensors } from "../../core/safetensors_file.ts";
import { rtn } from "../../quantizers/rtn.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import type { CompressedLinear } from "../../pipeline/compress_linear.ts";

Deno.test("the demo journal keeps finished modules and rows across runs and refuses other settings", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const j1 = await openJournal(dir, "settings A");
    const mod: CompressedLinear = {
      name: "layers.0.wq",
      weight: tensor("f32", [2, 3], new Float32Array([1, -2, 3, 0.5, 0, -0.25])),
      bitsPerWeight: 4.5,
      density: 1,
      stages: ["gptq"],
      layerError: NaN,
      seconds: 0.1,
    };
    await j1.saveBlock("gptq-w4", 0, [mod]);
    const mod1 = {
      ...mod,
      name: "layers.1.wq",
      weight: tensor("f32", [1, 1], new Float32Array([7])),
    };
    await j1.saveBlock("gptq-w4", 1, [mod1]);
    await j1.saveRow({
      method: "fp32",
      bitsPerWeight: 32,
      sizeBytes: 100,
      perplexity: { tinystories: 5.5 },
      tokens: { tinystories: 99 },
      seconds: 0,
      evalSeconds: 1,
      layerError: null,
      density: 1,
    });
    const j2 = await openJournal(dir, "settings A");
    assert.equal(j2.rows.get("fp32")!.perplexity.tinystories, 5.5);
    const back = await j2.completed("gptq-w4");
    assert.deepEqual([...back.keys()], ["layers.0.wq", "layers.1.wq"]);
    assert.deepEqual(back.get("layers.1.wq")!.weight.data, mod1.weight.data);
    const m = back.get("layers.0.wq")!;
    assert.deepEqual(m.weight.data, mod.weight.data);
    assert.deepEqual([m.bitsPerWeight, m.stages, Number.isNaN(m.layerError)], [
      4.5,
      ["gptq"],
      true,
    ]);
    assert.equal((await j2.completed("rtn-w4")).size, 0);
    await assert.rejects(() => openJournal(dir, "settings B"), /other settings/);
    assert.ok(![...Deno.readDirSync(dir)].some((e) => e.name.endsWith(".tmp")));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a journal holding only a method's modules (no finished row yet) still refuses other settings", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const j = await openJournal(dir, "settings A");
    await j.saveBlock("rtn-w4", 0, [{
      name: "layers.0.wq",
      weight: tensor("f32", [1, 2], new Float32Array([1, 2])),
      bitsPerWeight: 4,
      density: 1,
      stages: ["rtn"],
      layerError: NaN,
      seconds: 0,
    }]);
    await assert.rejects(() => openJournal(dir, "settings B"), /other settings/);
    assert.equal((await (await openJournal(dir, "settings A")).completed("rtn-w4")).size, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the journal stores a quantized module's weight only where its grid does not give it back", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const j = await openJournal(dir, "s");
    const w = tensor("f32", [4, 64], Float32Array.from({ length: 256 }, (_, i) => Math.sin(i)));
    const q = await rtn(w, { bits: 4, groupSize: 32 });
    const exact: CompressedLinear = {
      name: "layers.0.wq",
      weight: dequantize(q),
      bitsPerWeight: 4.5,
      density: 1,
      stages: ["rtn"],
      layerError: 0.01,
      seconds: 0,
      quantized: q,
    };
    // A weight that differs from its grid (as after a rotation): stored.
    const rotated = { ...exact, name: "layers.0.wk", weight: w };
    await j.saveBlock("m", 0, [exact, rotated]);
    const file = [...Deno.readDirSync(dir)].find((e) => e.name.endsWith(".safetensors"))!.name;
    const { tensors } = await readSafetensors(`${dir}/${file}`);
    assert(!tensors.has("layers.0.wq") && tensors.has("layers.0.wk"));
    const back = await j.completed("m");
    assert.deepEqual(back.get("layers.0.wq")!.weight.data, exact.weight.data);
    assert.deepEqual(back.get("layers.0.wk")!.weight.data, w.data);
    const bq = back.get("layers.0.wq")!.quantized as typeof q;
    assert.deepEqual([bq.codes, bq.scales, bq.zeros], [q.codes, q.scales, q.zeros]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
