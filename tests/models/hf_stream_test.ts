import assert from "node:assert/strict";
import { loadModel } from "../../models/causal_lm.ts";
import { openHfStreamWriter } from "../../models/hf_stream.ts";
import { writeHfLlama } from "../../models/hf.ts";
import { withCompressedWeights } from "../../models/compressible.ts";
import { compressModel } from "../../pipeline/compress_model.ts";
import { prng } from "../../core/prng.ts";
import { type Tensor, tensor } from "../../core/tensor.ts";
import { fixtureDir } from "./_hf_fixtures.ts";
import { readSafetensors } from "../../core/safetensors_file.ts";
import { convert } from "../../core/convert.ts";
import { shardName } from "../../models/formats/_shards.ts";
import { rtn } from "../../quantizers/rtn.ts";
import { dequantize, dequantizeLazily } from "../../quantizers/dequantize.ts";
import { isFilled } from "../../core/lazy_tensor.ts";
import { denseWorker } from "../../models/_dense_on_worker.ts";

Deno.test("a folder streamed block by block loads as the folder written at the end", async () => {
  const tmp = await Deno.makeTempDir();
  try {
    for (const name of ["qwen2", "llama"]) {
      const lm = await loadModel(fixtureDir(name));
      const rng = prng(1);
      const seqs = Array.from({ length: 4 }, () => Array.from({ length: 16 }, () => rng.int(400)));
      const recipe = { stages: [{ kind: "gptq", bits: 4, groupSize: 32 } as const] };
      const kept = await compressModel(lm, seqs, recipe, { backend: "cpu" });
      const writer = await openHfStreamWriter(lm.model, `${tmp}/${name}-stream`);
      const pending: Promise<void>[] = [];
      const streamed = await compressModel(lm, seqs, recipe, {
        backend: "cpu",
        keepModules: false,
        onBlockDone: (b, modules) => {
          if (b >= lm.blocks.length) return;
          const weights = Object.fromEntries(
            modules.map((m) => [m.name.slice(m.name.lastIndexOf(".") + 1), m.weight]),
          );
          pending.push(writer.writeBlock(b, weights));
        },
      });
      await Promise.all(pending);
      await assert.rejects(() => writer.writeBlock(0, {}), /written already/);
      await writer.finish(streamed.modules.get("output")?.weight ?? lm.model.classifier);
      // The blocks' modules were dropped; the summaries describe all of them.
      assert.equal([...streamed.modules.keys()].filter((k) => k.startsWith("layers.")).length, 0);
      assert.equal(streamed.summaries.size, kept.summaries.size);
      assert.equal(streamed.bitsPerWeight, kept.bitsPerWeight);
      await writeHfLlama(withCompressedWeights(lm.model, kept.modules), `${tmp}/${name}-whole`);
      const a = await loadModel(`${tmp}/${name}-stream`);
      const b = await loadModel(`${tmp}/${name}-whole`);
      const ids = seqs[0]!;
      const la = await a.logits(ids, { backend: "cpu" });
      const lb = await b.logits(ids, { backend: "cpu" });
      assert.deepEqual(la, lb);
      const files = [...Deno.readDirSync(`${tmp}/${name}-stream`)].map((e) => e.name).sort();
      assert(files.includes("model.safetensors.index.json") && files.includes("config.json"));
      assert.equal(files.filter((f) => f.endsWith(".safetensors")).length, lm.blocks.length + 1);
    }
    const lm = await loadModel(fixtureDir("llama"));
    {
      // Writing a block reads only its norms from the model: the lazily
      // widened block in hand (here block 1) is not dropped for block 0's.
      const w = await openHfStreamWriter(lm.model, `${tmp}/lazy`);
      const block0 = { ...lm.blocks[0]!.linears };
      const held = lm.model.layers[1]!.wq;
      await w.writeBlock(0, block0);
      const again = lm.model.layers[1]!.wq;
      assert.equal(again, held);
      await w.abort();
    }
    await assert.rejects(() => openHfStreamWriter(lm.model, tmp), /it exists/);
    const w = await openHfStreamWriter(lm.model, `${tmp}/partial`);
    await assert.rejects(() => w.finish(), /blocks 0,1.* missing/);
    await w.abort();
    assert.deepEqual(
      [...Deno.readDirSync(tmp)].map((e) => e.name).filter((n) => n.startsWith("partial")),
      [],
      "an aborted folder leaves nothing",
    );
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("a streamed folder stores its block linears in the dtype asked for", async () => {
  const tmp = await Deno.makeTempDir();
  try {
    const lm = await loadModel(fixtureDir("llama"));
    const w = await openHfStreamWriter(lm.model, `${tmp}/bf16`, { dtype: "bf16" });
    // Weights a third of the model's: not bf16 values.
    const third = (t: Tensor<"f32">) => tensor("f32", t.shape, t.data.map((v) => v / 3));
    const w2 = third(lm.model.layers[0]!.w2);
    for (let b = 0; b < lm.blocks.length; b++) {
      const linears = Object.entries(lm.blocks[b]!.linears).map(([n, t]) => [n, third(t)]);
      await w.writeBlock(b, { ...Object.fromEntries(linears), ...(b === 0 ? { w2 } : {}) });
    }
    await w.finish();
    const { tensors } = await readSafetensors(`${tmp}/bf16/${shardName(0, lm.blocks.length + 1)}`);
    assert.equal(tensors.get("model.layers.0.mlp.down_proj.weight")!.dtype, "bf16");
    assert.equal(tensors.get("model.layers.0.input_layernorm.weight")!.dtype, "f32");
    const back = await loadModel(`${tmp}/bf16`);
    const rounded = convert(convert(w2, "bf16"), "f32").data;
    assert.deepEqual(back.model.layers[0]!.w2.data, rounded);
    assert.notDeepEqual(rounded, w2.data);
    await assert.rejects(
      // deno-lint-ignore no-explicit-any
      () => openHfStreamWriter(lm.model, `${tmp}/x`, { dtype: "f64" as any }),
      /'dtype' must be "f32", "f16" or "bf16"/,
    );
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("grids not yet dequantized are written from their codes, as their dense weights are", async () => {
  const tmp = await Deno.makeTempDir();
  try {
    const lm = await loadModel(fixtureDir("llama"));
    for (const dtype of ["f32", "bf16", "f16"] as const) {
      const lazy = await openHfStreamWriter(lm.model, `${tmp}/lazy-${dtype}`, { dtype });
      const dense = await openHfStreamWriter(lm.model, `${tmp}/dense-${dtype}`, { dtype });
      const held: Tensor<"f32">[] = [];
      for (let b = 0; b < lm.blocks.length; b++) {
        const lazyW: Record<string, Tensor<"f32">> = {}, denseW: Record<string, Tensor<"f32">> = {};
        for (const [n, w] of Object.entries(lm.blocks[b]!.linears)) {
          const q = await rtn(w, { bits: 3, groupSize: 16 });
          lazyW[n] = dequantizeLazily(q);
          denseW[n] = dequantize(q);
          held.push(lazyW[n]!);
        }
        await Promise.all([lazy.writeBlock(b, lazyW), dense.writeBlock(b, denseW)]);
      }
      await lazy.finish();
      await dense.finish();
      assert(held.every((t) => !isFilled(t)), "the writer did not dequantize on the host");
      for (let s = 0; s < lm.blocks.length; s++) {
        const name = shardName(s, lm.blocks.length + 1);
        const a = (await readSafetensors(`${tmp}/lazy-${dtype}/${name}`)).tensors;
        const b = (await readSafetensors(`${tmp}/dense-${dtype}/${name}`)).tensors;
        assert.deepEqual([...a.keys()], [...b.keys()]);
        for (const [k, t] of a) {
          assert.equal(t.dtype, b.get(k)!.dtype, k);
          assert.deepEqual(t.data, b.get(k)!.data, k);
        }
      }
      // The rows of wq were reordered to Hugging Face's layout (not the identity).
      const l0 =
        (await readSafetensors(`${tmp}/lazy-${dtype}/${shardName(0, lm.blocks.length + 1)}`))
          .tensors.get("model.layers.0.self_attn.q_proj.weight")!;
      const cols = held[0]!.shape[1]!;
      assert.notDeepEqual(
        Array.from(convert(l0, "f32").data.subarray(cols, 2 * cols)),
        Array.from(convert(convert(held[0]!, dtype), "f32").data.subarray(cols, 2 * cols)),
      );
    }
    // A grid whose arrays do not match its shape is refused by name, as on the main thread.
    const q = await rtn(lm.blocks[0]!.linears.wv!, { bits: 4, groupSize: 16 });
    const bad = { ...q, codes: q.codes.subarray(1) };
    assert.throws(() => dequantize(bad), { name: "RangeError", message: /do not match the shape/ });
    const onWorker = denseWorker();
    try {
      await assert.rejects(
        () => onWorker.grid(bad, "bf16", null),
        { name: "RangeError", message: /do not match the shape/ },
      );
    } finally {
      onWorker.close();
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
