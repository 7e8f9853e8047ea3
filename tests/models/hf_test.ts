import assert from "node:assert/strict";
import { dataFile } from "../_helpers.ts";
import { loadLlama2c } from "../../models/llama2c.ts";
import { llamaForward } from "../../models/forward.ts";
import {
  hfConfig,
  loadHfLlama,
  readLinearAhead,
  toHfTensors,
  type WidenRows,
  writeHfLlama,
} from "../../models/hf.ts";
import { denseWorker } from "../../models/_dense_on_worker.ts";
import { openHfStreamWriter } from "../../models/hf_stream.ts";
import { writeSafetensors } from "../../core/safetensors_file.ts";
import { bf16BitsToF32, convert, f32ToBf16Bits } from "../../core/convert.ts";
import type { Tensor } from "../../core/tensor.ts";
import { loadLlama2cTokenizer } from "../../models/llama2c_tokenizer.ts";
import { type LlamaModel, STORED_LINEARS } from "../../models/model.ts";

/**
 * Runs `body` on stories260K with a fresh temporary folder, removed afterwards;
 * returns at once (the reason printed) when the model is absent.
 */
async function withModelDir(
  body: (model: LlamaModel, dir: string) => Promise<void>,
): Promise<void> {
  const path = dataFile("stories260K/stories260K.bin");
  if (!path) return;
  const model = await loadLlama2c(path);
  const dir = await Deno.makeTempDir();
  try {
    await body(model, dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("stories260K written in HF layout and read back gives identical logits", () =>
  withModelDir(async (model, dir) => {
    await writeHfLlama(model, dir);
    const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    assert.equal(config.num_key_value_heads, 4);
    const back = await loadHfLlama(dir);
    assert.equal(back.classifier, back.tokenEmbedding);
    const tokens = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376];
    assert.deepEqual(llamaForward(back, tokens), llamaForward(model, tokens));
    // The stored q rows are really permuted (HF half-split layout), not copied.
    const { tensors } = { tensors: toHfTensors(model) };
    const q = tensors.get("model.layers.0.self_attn.q_proj.weight")!;
    assert.notDeepEqual(q.data, model.layers[0]!.wq.data);
    // Row 1 of HF head 0 (first half, j = 1) is llama2.c row 2 (pair 1, first element).
    assert.deepEqual(q.data.subarray(64, 128), model.layers[0]!.wq.data.subarray(128, 192));
  }));

Deno.test("HF checkpoints with an unknown architecture, missing or misshapen tensors are refused by name", () =>
  withModelDir(async (model, dir) => {
    await writeHfLlama(model, dir);
    const good = hfConfig(model.config, true);
    await Deno.writeTextFile(
      `${dir}/config.json`,
      JSON.stringify({ ...good, architectures: ["GPT2LMHeadModel"], model_type: "gpt2" }),
    );
    await assert.rejects(
      () => loadHfLlama(dir),
      /config\.json: 'architectures' \["GPT2LMHeadModel"\] is not supported/,
    );
    await Deno.writeTextFile(
      `${dir}/config.json`,
      JSON.stringify({ ...good, intermediate_size: 180 }),
    );
    await assert.rejects(
      () => loadHfLlama(dir),
      /model\.safetensors: tensor model\.layers\.0\.mlp\.gate_proj\.weight has shape \[172,64\], config\.json implies \[180,64\]/,
    );
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(good));
    const tensors = toHfTensors(model);
    tensors.delete("model.layers.3.self_attn.v_proj.weight");
    await writeSafetensors(`${dir}/model.safetensors`, tensors);
    await assert.rejects(
      () => loadHfLlama(dir),
      /missing tensor model\.layers\.3\.self_attn\.v_proj\.weight/,
    );
    await Deno.writeTextFile(`${dir}/config.json`, "{ not json");
    await assert.rejects(
      () => loadHfLlama(dir),
      /config\.json: the configuration is not a JSON object/,
    );
  }));

Deno.test("a checkpoint split over two safetensors files loads as one", () =>
  withModelDir(async (model, dir) => {
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(hfConfig(model.config, true)));
    const entries = [...toHfTensors(model)];
    const half = Math.floor(entries.length / 2);
    await writeSafetensors(
      `${dir}/model-00001-of-00002.safetensors`,
      new Map(entries.slice(0, half)),
    );
    await writeSafetensors(`${dir}/model-00002-of-00002.safetensors`, new Map(entries.slice(half)));
    const back = await loadHfLlama(dir);
    assert.deepEqual(llamaForward(back, [1, 403, 407]), llamaForward(model, [1, 403, 407]));
  }));

Deno.test("the demo runs on a Hugging Face folder with its tokenizer.json", async () => {
  const path = dataFile("stories260K/stories260K.bin");
  const tokPath = dataFile("stories260K/tok512.bin");
  if (!path || !tokPath || !dataFile("text/tinystories_val_sample.txt")) return;
  const dir = await Deno.makeTempDir();
  try {
    const model = await loadLlama2c(path);
    await writeHfLlama(model, dir, {
      tokenizer: await loadLlama2cTokenizer(tokPath, { vocabSize: 512 }),
    });
    const demo = new URL("../../examples/demo.ts", import.meta.url).pathname;
    const run = async (extra: string[]) => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          demo,
          "--quiet",
          "--no-plot",
          "--json",
          "--methods",
          "fp32",
          "--eval",
          "tinystories",
          "--eval-tokens",
          "300",
          ...extra,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      return JSON.parse(new TextDecoder().decode(out.stdout))[0].perplexity.tinystories as number;
    };
    const hf = await run(["--model", dir]);
    const l2c = await run(["--model", path, "--tokenizer", tokPath]);
    assert.ok(Math.abs(hf - l2c) < 1e-9 * l2c, `${hf} vs ${l2c}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("f16 and bf16 HF tensors load as their float32 values", () =>
  withModelDir(async (model, dir) => {
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(hfConfig(model.config, true)));
    const tensors = new Map<string, Tensor>(toHfTensors(model));
    const v = "model.layers.1.self_attn.v_proj.weight", d = "model.layers.1.mlp.down_proj.weight";
    tensors.set(v, convert(tensors.get(v)!, "f16"));
    tensors.set(d, convert(tensors.get(d)!, "bf16"));
    await writeSafetensors(`${dir}/model.safetensors`, tensors);
    const back = await loadHfLlama(dir);
    assert.deepEqual(
      back.layers[1]!.wv.data,
      Float32Array.from(model.layers[1]!.wv.data, (x) => Math.f16round(x)),
    );
    const bf = back.layers[1]!.w2.data;
    for (let i = 0; i < bf.length; i += 97) {
      assert.equal(bf[i], bf16BitsToF32(f32ToBf16Bits(model.layers[1]!.w2.data[i]!)));
    }
  }));

Deno.test("a checkpoint read from disk checks every tensor at load, reads each block linear when widened, and gives the same logits", () =>
  withModelDir(async (model, dir) => {
    await writeHfLlama(model, dir);
    const ids = [1, 365, 191, 263, 31];
    const inMemory = await loadHfLlama(dir, { read: "memory" });
    const fromDisk = await loadHfLlama(dir, { read: "disk" });
    assert.deepEqual(
      llamaForward(fromDisk, ids),
      llamaForward(inMemory, ids),
    );
    assert.deepEqual(fromDisk.layers[2]!.w2.data, inMemory.layers[2]!.w2.data);
    // Its linears are not kept as stored (the CPU pass widens them instead).
    assert.equal(fromDisk.layers[0]![STORED_LINEARS], undefined);
    assert.notEqual(inMemory.layers[0]![STORED_LINEARS], undefined);
    // Read when used: a file changed since the load is refused by name.
    await writeHfLlama(model, `${dir}/c`);
    const again = await loadHfLlama(`${dir}/c`, { read: "disk" });
    await Deno.writeFile(`${dir}/c/model.safetensors`, new Uint8Array(64));
    assert.throws(
      () => again.layers[3]!.wq,
      /model\.safetensors changed since the model was loaded/,
    );
    // A misshapen tensor is refused at load, before any linear is read.
    await writeHfLlama(model, `${dir}/b`);
    await Deno.writeTextFile(
      `${dir}/b/config.json`,
      JSON.stringify({ ...hfConfig(model.config, true), intermediate_size: 180 }),
    );
    await assert.rejects(
      () => loadHfLlama(`${dir}/b`, { read: "disk" }),
      /gate_proj\.weight has shape \[172,64\], config\.json implies \[180,64\]/,
    );
    await assert.rejects(
      // deno-lint-ignore no-explicit-any
      () => loadHfLlama(dir, { read: "mmap" as any }),
      /'read' must be "auto", "memory" or "disk"/,
    );
    await assert.rejects(
      () => loadHfLlama(`${dir}/b`, { read: "disk", widen: "load" }),
      /'read' "disk": it applies to unquantized checkpoints widened by block/,
    );
  }));

Deno.test("readLinearAhead() reads a linear from disk without blocking, widened by the caller's function, as the layer gives it", () =>
  withModelDir(async (model, dir) => {
    // In bf16, so that widening does work (and q/k rows are reordered).
    const writer = await openHfStreamWriter(model, `${dir}/bf16`, { dtype: "bf16" });
    for (const [l, layer] of model.layers.entries()) {
      await writer.writeBlock(l, layer as unknown as Record<string, Tensor<"f32">>);
    }
    await writer.finish();
    dir = `${dir}/bf16`;
    const inMemory = await loadHfLlama(dir, { read: "memory" });
    const fromDisk = await loadHfLlama(dir, { read: "disk" });
    let calls = 0;
    const onWorker = denseWorker();
    try {
      const widen: WidenRows = (w, rowFrom) => {
        calls++;
        assert.equal(w.dtype, "bf16");
        return onWorker.widen(w, rowFrom);
      };
      for (const key of ["wq", "wk", "w2"] as const) {
        const ahead = await readLinearAhead(fromDisk.layers[1]!, key, widen);
        assert.deepEqual(ahead.data, inMemory.layers[1]![key].data, key);
        // The layer now gives that tensor (the block is cached).
        assert.equal(fromDisk.layers[1]![key], ahead, key);
        assert.equal(await readLinearAhead(fromDisk.layers[1]!, key, widen), ahead, key);
      }
      assert.equal(calls, 3);
      // A model held in memory gives the layer's linear, without calling `widen`.
      const held = await readLinearAhead(inMemory.layers[0]!, "wv", widen);
      assert.equal(held, inMemory.layers[0]!.wv);
      assert.equal(calls, 3);
      // A file changed since the load is refused by name, as a synchronous read is.
      for (const e of Deno.readDirSync(dir)) {
        if (e.name.endsWith(".safetensors")) {
          await Deno.writeFile(`${dir}/${e.name}`, new Uint8Array(64));
        }
      }
      await assert.rejects(
        () => readLinearAhead(fromDisk.layers[3]!, "wq", widen),
        /\.safetensors changed since the model was loaded/,
      );
    } finally {
      onWorker.close();
    }
  }));
