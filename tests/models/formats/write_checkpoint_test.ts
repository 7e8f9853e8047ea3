import assert from "node:assert/strict";
import { readSafetensors } from "../../../core/safetensors_file.ts";
import { type CausalLM, loadModel } from "../../../models/causal_lm.ts";
import { isPackedLinear, unpackPackedLinear } from "../../../models/formats/packed_linear.ts";
import { writeCheckpoint } from "../../../models/formats/write_checkpoint.ts";
import { rotaryRowOrder } from "../../../models/hf.ts";
import { LLAMA_LINEARS, llamaDims, STORED_LINEARS } from "../../../models/model.ts";
import { dequantize } from "../../../quantizers/dequantize.ts";
import { rtn } from "../../../quantizers/rtn.ts";
import { magnitudePrune } from "../../../pruners/magnitude.ts";
import type { Tensor } from "../../../core/tensor.ts";
import { fixtureDir } from "../_hf_fixtures.ts";
import { f16Module, quantizedModules, type TestGrid, type TestModule } from "./_grids.ts";

const IDS = [1, 17, 200, 33, 4, 90, 91, 5, 400, 12, 7, 7, 300, 2];
const STREAM = Array.from({ length: 260 }, (_, i) => (i * 37 + (i >> 3)) % 448);

async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "llmc-formats-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Every packed block linear of a loaded folder holds the codes, scales and zero points written. */
function assertCodes(lm: CausalLM, modules: Map<string, TestModule>): void {
  const { nHeads, nKvHeads } = lm.config;
  const { qDim, kvDim } = llamaDims(lm.config);
  lm.model.layers.forEach((layer, l) => {
    for (const key of LLAMA_LINEARS) {
      const stored = layer[STORED_LINEARS]![key].weight;
      assert.ok(isPackedLinear(stored) && stored.kind !== "sparse-bitmask", `layers.${l}.${key}`);
      const back = unpackPackedLinear(stored), q = modules.get(`layers.${l}.${key}`)!.quantized;
      // Stored rows are Hugging Face's: q and k rows were permuted with their scales and zeros.
      const order = key === "wq"
        ? rotaryRowOrder(nHeads, qDim)
        : key === "wk"
        ? rotaryRowOrder(nKvHeads, kvDim)
        : null;
      const [N, K] = q.shape, G = q.scales.length / N;
      for (let r = 0; r < N; r++) {
        const s = order ? order[r]! : r;
        assert.deepEqual(
          back.codes.subarray(s * K, (s + 1) * K),
          q.codes.subarray(r * K, (r + 1) * K),
        );
        assert.deepEqual(
          back.scales.subarray(s * G, (s + 1) * G),
          q.scales.subarray(r * G, (r + 1) * G),
        );
        assert.deepEqual(
          back.zeros.subarray(s * G, (s + 1) * G),
          q.zeros.subarray(r * G, (r + 1) * G),
        );
      }
      assert.deepEqual(back.gIdx, q.gIdx);
    }
  });
}

const CASES: [string, TestGrid][] = [
  ["llama", { bits: 4, groupSize: 32, symmetric: false, actOrder: true }],
  ["llama3_rope", { bits: 8, groupSize: -1, symmetric: true, actOrder: false }], // tied, sharded source
  ["qwen2", { bits: 3, groupSize: 16, symmetric: false, actOrder: false }], // q/k/v biases
  ["qwen3", { bits: 2, groupSize: 32, symmetric: true, actOrder: true }], // q/k norms
];

Deno.test("GPTQ v1, v2 and compressed-tensors folders hold the grids written and give the logits and perplexity of the dense folder of the same weights", async () => {
  await withTemp(async (tmp) => {
    for (const [fixture, grid] of CASES) {
      const lm = await loadModel(fixtureDir(fixture));
      const modules = await quantizedModules(lm.model, () => grid);
      const dense = `${tmp}/${fixture}-dense`;
      await writeCheckpoint(lm.model, modules, dense, { format: "dense" });
      const d = await loadModel(dense);
      const [dLogits, dPpl] = [
        await d.logits(IDS, { backend: "cpu" }),
        await d.perplexity(STREAM, { backend: "cpu", seqLen: 64 }),
      ];
      const folders: [string, Parameters<typeof writeCheckpoint>[3]][] = [
        ["gptq", { format: "gptq" }],
        ["gptq_v2", { format: "gptq", checkpointFormat: "gptq_v2" }],
        ["ct", { format: "compressed-tensors" }],
      ];
      for (const [label, options] of folders) {
        if (label === "gptq" && !grid.symmetric && fixture === "qwen2") continue; // v2 below suffices
        const dir = `${tmp}/${fixture}-${label}`;
        await writeCheckpoint(lm.model, modules, dir, options);
        const p = await loadModel(dir);
        assertCodes(p, modules);
        assert.deepEqual(await p.logits(IDS, { backend: "cpu" }), dLogits, `${fixture} ${label}`);
        const ppl = await p.perplexity(STREAM, { backend: "cpu", seqLen: 64 });
        assert.ok(Math.abs(ppl.perplexity / dPpl.perplexity - 1) < 1e-4, `${fixture} ${label}`);
        assert.equal(ppl.perplexity, dPpl.perplexity); // the same sums in the same order
        // Non-linear tensors keep the source dtype; a tied embedding stays tied.
        const st = await readSafetensors(`${dir}/model.safetensors`);
        assert.equal(st.tensors.get("model.norm.weight")!.dtype, "bf16");
        assert.equal(st.tensors.has("lm_head.weight"), !lm.config.sharedClassifier);
        assert.equal(p.config.sharedClassifier, lm.config.sharedClassifier);
      }
    }
  });
});

Deno.test("the quantization_config of each format has the keys the loaders read", async () => {
  await withTemp(async (tmp) => {
    const lm = await loadModel(fixtureDir("llama"));
    const modules = await quantizedModules(
      lm.model,
      () => ({ bits: 4, groupSize: 32, symmetric: false, actOrder: true }),
    );
    await writeCheckpoint(lm.model, modules, `${tmp}/g`, { format: "gptq" });
    const g = JSON.parse(await Deno.readTextFile(`${tmp}/g/config.json`));
    assert.deepEqual(g.quantization_config, {
      quant_method: "gptq",
      bits: 4,
      group_size: 32,
      desc_act: true,
      sym: false,
      checkpoint_format: "gptq",
      lm_head: false,
      true_sequential: true,
      damp_percent: 0.01,
    });
    assert.equal(g.torch_dtype, "bfloat16");
    const st = await readSafetensors(`${tmp}/g/model.safetensors`);
    const p = "model.layers.0.mlp.down_proj";
    assert.deepEqual(st.tensors.get(`${p}.qweight`)!.shape, [160 / 8, 64]);
    assert.deepEqual(st.tensors.get(`${p}.qzeros`)!.shape, [5, 64 / 8]);
    assert.equal(st.tensors.get(`${p}.scales`)!.dtype, "f16");
    assert.deepEqual(st.tensors.get(`${p}.g_idx`)!.shape, [160]);
    assert.ok(!st.tensors.has(`${p}.weight`));

    // compressed-tensors: one group of every linear; wv at 8 bits per channel makes two.
    const mixed = new Map(modules);
    for (let l = 0; l < 3; l++) {
      mixed.set(
        `layers.${l}.wv`,
        f16Module(await rtn(lm.model.layers[l]!.wv, { bits: 8, symmetric: true })),
      );
    }
    mixed.delete("layers.2.w2"); // kept dense: listed in ignore
    await writeCheckpoint(lm.model, mixed, `${tmp}/c`, { format: "compressed-tensors" });
    const c = JSON.parse(await Deno.readTextFile(`${tmp}/c/config.json`)).quantization_config;
    const weights = (
      bits: number,
      group: number | null,
      symmetric: boolean,
      actorder: string | null,
    ) => ({
      num_bits: bits,
      type: "int",
      symmetric,
      group_size: group,
      strategy: group === null ? "channel" : "group",
      block_structure: null,
      dynamic: false,
      actorder,
      observer: "minmax",
      observer_kwargs: {},
    });
    const group = (targets: string[], w: unknown) => ({
      targets,
      weights: w,
      input_activations: null,
      output_activations: null,
      format: "pack-quantized",
    });
    const names = (keys: string[], layers = [0, 1, 2]) =>
      layers.flatMap((l) => keys.map((k) => `model.layers.${l}.${k}`));
    assert.deepEqual(c, {
      quant_method: "compressed-tensors",
      format: "pack-quantized",
      config_groups: {
        group_0: group(
          [
            ...names(["self_attn.q_proj", "self_attn.k_proj"], [0]),
            ...names(["self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"], [0]),
            ...names(["self_attn.q_proj", "self_attn.k_proj"], [1]),
            ...names(["self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"], [1]),
            ...names(["self_attn.q_proj", "self_attn.k_proj"], [2]),
            ...names(["self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj"], [2]),
          ].sort((a, b) => order(a) - order(b)),
          weights(4, 32, false, "group"),
        ),
        group_1: group(names(["self_attn.v_proj"]), weights(8, null, true, null)),
      },
      ignore: ["lm_head", "model.layers.2.mlp.down_proj"],
      quantization_status: "compressed",
      kv_cache_scheme: null,
      global_compression_ratio: null,
      sparsity_config: {},
    });
    const back = await loadModel(`${tmp}/c`);
    assert.ok(!isPackedLinear(back.model.layers[2]![STORED_LINEARS]!.w2.weight));
    const cst = await readSafetensors(`${tmp}/c/model.safetensors`);
    assert.equal(cst.tensors.get("model.layers.2.mlp.down_proj.weight")!.dtype, "bf16");
    assert.ok(!cst.tensors.has("model.layers.0.self_attn.v_proj.weight_zero_point")); // symmetric
    assert.deepEqual(cst.tensors.get("model.layers.0.self_attn.v_proj.weight_packed")!.shape, [
      32,
      16,
    ]);
    assert.deepEqual(cst.tensors.get("model.layers.0.mlp.down_proj.weight_zero_point")!.shape, [
      8,
      5,
    ]);
    assert.deepEqual(cst.tensors.get("model.layers.0.mlp.down_proj.weight_g_idx")!.shape, [160]);
  });
});

/** Position of a module name in the order of the block's linears (layer, then wq … w2). */
function order(name: string): number {
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(name)!;
  const keys = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
  ];
  return +m[1]! * 10 + keys.indexOf(m[2]!);
}

Deno.test("dense folders store the linears in --dtype and the rest in the source dtype, and shard at maxShardBytes with an index", async () => {
  await withTemp(async (tmp) => {
    const lm = await loadModel(fixtureDir("qwen2"));
    const modules = await quantizedModules(
      lm.model,
      () => ({ bits: 4, groupSize: 32, symmetric: false, actOrder: false }),
    );
    for (const dtype of ["bf16", "f16"] as const) {
      const files = await writeCheckpoint(lm.model, modules, `${tmp}/${dtype}`, { dtype });
      assert.deepEqual(files, ["config.json", "model.safetensors"]);
      const st = await readSafetensors(`${tmp}/${dtype}/model.safetensors`);
      assert.equal(st.tensors.get("model.layers.1.self_attn.q_proj.weight")!.dtype, dtype);
      assert.equal(st.tensors.get("model.layers.1.self_attn.q_proj.bias")!.dtype, "bf16");
      const config = JSON.parse(await Deno.readTextFile(`${tmp}/${dtype}/config.json`));
      assert.equal(config.torch_dtype, dtype === "bf16" ? "bfloat16" : "float16");
      assert.equal(config.quantization_config, undefined);
    }
    await writeCheckpoint(lm.model, modules, `${tmp}/f32`, { maxShardBytes: 60_000 });
    const shards = [...Deno.readDirSync(`${tmp}/f32`)].map((e) => e.name).sort();
    assert.ok(shards.length > 3 && shards.includes("model.safetensors.index.json"), shards.join());
    const index = JSON.parse(await Deno.readTextFile(`${tmp}/f32/model.safetensors.index.json`));
    assert.ok(index.metadata.total_size > 60_000);
    const a = await loadModel(`${tmp}/f32`);
    const g = await writeCheckpoint(lm.model, modules, `${tmp}/gs`, {
      format: "gptq",
      maxShardBytes: 20_000,
    });
    assert.ok(
      g.includes("model.safetensors.index.json") && g.includes("model-00002-of-00006.safetensors"),
      g.join(),
    );
    const packed = await loadModel(`${tmp}/gs`);
    assert.deepEqual(
      await packed.logits(IDS, { backend: "cpu" }),
      await a.logits(IDS, { backend: "cpu" }),
    );
  });
});

Deno.test("writeCheckpoint refuses what a format cannot hold, naming the module, and a failed write leaves no folder", async () => {
  await withTemp(async (tmp) => {
    const lm = await loadModel(fixtureDir("llama"));
    const grid = { bits: 4, groupSize: 32, symmetric: false, actOrder: false };
    const modules = await quantizedModules(lm.model, () => grid);
    const out = `${tmp}/out`;
    const fails = async (
      m: Map<string, TestModule>,
      options: Parameters<typeof writeCheckpoint>[3],
      re: RegExp,
    ) => {
      await assert.rejects(writeCheckpoint(lm.model, m, out, options), re);
      assert.deepEqual([...Deno.readDirSync(tmp)].map((e) => e.name), [], "nothing is left");
    };
    // A zero point of 0 cannot be stored minus one (v1).
    const q = modules.get("layers.1.w3")!.quantized;
    const zeros = Float32Array.from(q.zeros);
    zeros[5] = 0;
    const zero0 = new Map(modules).set("layers.1.w3", f16Module({ ...q, zeros }));
    await fails(
      zero0,
      { format: "gptq" },
      /module layers\.1\.w3: .*zero point 0 .*checkpoint_format "gptq_v2" stores it/,
    );
    const v2 = await writeCheckpoint(lm.model, zero0, out, {
      format: "gptq",
      checkpointFormat: "gptq_v2",
    });
    assert.ok(v2.includes("model.safetensors"));
    await Deno.remove(out, { recursive: true });
    // A module missing, on another grid, or whose weight is not its grid (rotated, pruned).
    const missing = new Map(modules);
    missing.delete("layers.2.wk");
    await fails(missing, { format: "gptq" }, /module layers\.2\.wk was not compressed/);
    const mixed = new Map(modules).set(
      "layers.0.wo",
      f16Module(await rtn(lm.model.layers[0]!.wo, { bits: 8 })),
    );
    await fails(
      mixed,
      { format: "gptq" },
      /module layers\.0\.wo \(8 bits, group -1, symmetric false\) differs from layers\.0\.wq/,
    );
    const m = modules.get("layers.0.w1")!;
    const moved = { ...m, weight: { ...m.weight, data: m.weight.data.map((v) => v * 0.5) } };
    await fails(
      new Map(modules).set("layers.0.w1", moved),
      { format: "compressed-tensors" },
      /module layers\.0\.w1's weight is not its dequantized grid/,
    );
    // compressed-tensors needs groups dividing K (160 = 5·32 here, 64 = 2·32; groups of 48 divide neither).
    const g48 = f16Module(await rtn(lm.model.layers[0]!.w2, { bits: 4, groupSize: 48 }));
    await fails(
      new Map(modules).set("layers.0.w2", g48),
      { format: "compressed-tensors" },
      /module layers\.0\.w2: compressed-tensors needs groups of one size dividing K = 160: the group size 48 does not divide it/,
    );
    await fails(
      modules,
      { format: "gguf" as "dense" },
      /'format' must be one of dense, gptq, compressed-tensors/,
    );
    // A non-empty folder is refused before anything is written.
    await Deno.mkdir(out);
    await Deno.writeTextFile(`${out}/x`, "x");
    await assert.rejects(
      writeCheckpoint(lm.model, modules, out),
      /it exists and is not an empty folder/,
    );
    assert.deepEqual([...Deno.readDirSync(out)].map((e) => e.name), ["x"]);
    // The dense weights of an unquantized module (no grid) write fine as dense.
    const plain = new Map([["layers.0.wq", {
      weight: dequantize(modules.get("layers.0.wq")!.quantized),
    }]]);
    await writeCheckpoint(lm.model, plain, `${tmp}/plain`);
  });
});

Deno.test("pruned linears are written sparse (sparse-24-bitmask when every mask is 2:4, else sparse-bitmask) and load to the dense folder's logits", async () => {
  await withTemp(async (tmp) => {
    const lm = await loadModel(fixtureDir("qwen2"));
    for (
      const structure of [
        { kind: "nm", n: 2, m: 4 },
        { kind: "unstructured", sparsity: 0.5 },
      ] as const
    ) {
      const modules = new Map<string, { weight: Tensor<"f32">; mask: Uint8Array }>();
      for (let l = 0; l < lm.model.layers.length; l++) {
        for (const key of LLAMA_LINEARS) {
          const p = await magnitudePrune(lm.model.layers[l]![key], { structure });
          modules.set(`layers.${l}.${key}`, { weight: p.weight, mask: p.mask.data });
        }
      }
      const label = structure.kind === "nm" ? "24" : "bitmask";
      await writeCheckpoint(lm.model, modules, `${tmp}/${label}`, { format: "compressed-tensors" });
      await writeCheckpoint(lm.model, modules, `${tmp}/${label}-dense`);
      const c = JSON.parse(await Deno.readTextFile(`${tmp}/${label}/config.json`));
      const format = structure.kind === "nm" ? "sparse-24-bitmask" : "sparse-bitmask";
      assert.deepEqual(c.quantization_config, {
        quant_method: "compressed-tensors",
        sparsity_config: {
          format,
          global_sparsity: c.quantization_config.sparsity_config.global_sparsity,
          sparsity_structure: structure.kind === "nm" ? "2:4" : "unstructured",
          targets: ["Linear"],
          ignore: ["lm_head"],
          registry_requires_subclass: false,
        },
        transform_config: {},
      });
      assert.ok(Math.abs(c.quantization_config.sparsity_config.global_sparsity - 0.5) < 0.01);
      const st = await readSafetensors(`${tmp}/${label}/model.safetensors`);
      const p = "model.layers.0.mlp.down_proj";
      assert.deepEqual(st.tensors.get(`${p}.bitmask`)!.shape, [64, 20]);
      assert.equal(st.tensors.get(`${p}.compressed`)!.dtype, "f32");
      assert.equal(st.tensors.has(`${p}.row_offsets`), format === "sparse-bitmask");
      const [a, b] = await Promise.all([
        loadModel(`${tmp}/${label}`),
        loadModel(`${tmp}/${label}-dense`),
      ]);
      const stored = a.model.layers[0]![STORED_LINEARS]!.wq.weight;
      assert.ok(
        isPackedLinear(stored) && stored.kind === "sparse-bitmask" && stored.format === format,
      );
      assert.deepEqual(
        await a.logits(IDS, { backend: "cpu" }),
        await b.logits(IDS, { backend: "cpu" }),
      );
    }
    // Values in bf16 on request; a pruned and quantized module is refused.
    const w = lm.model.layers[0]!.w1;
    const p = await magnitudePrune(w, { structure: { kind: "unstructured", sparsity: 0.5 } });
    const one = new Map([["layers.0.w1", { weight: p.weight, mask: p.mask.data }]]);
    await writeCheckpoint(lm.model, one, `${tmp}/bf16`, {
      format: "compressed-tensors",
      dtype: "bf16",
    });
    const st = await readSafetensors(`${tmp}/bf16/model.safetensors`);
    assert.equal(st.tensors.get("model.layers.0.mlp.gate_proj.compressed")!.dtype, "bf16");
    assert.equal(st.tensors.get("model.layers.0.mlp.up_proj.weight")!.dtype, "bf16"); // uncompressed
    const c = JSON.parse(await Deno.readTextFile(`${tmp}/bf16/config.json`));
    assert.deepEqual(c.quantization_config.sparsity_config.targets, [
      "model.layers.0.mlp.gate_proj",
    ]);
    const q = f16Module(await rtn(w, { bits: 4 }));
    await assert.rejects(
      writeCheckpoint(
        lm.model,
        new Map([["layers.0.w1", { ...q, mask: p.mask.data }]]),
        `${tmp}/x`,
        {
          format: "compressed-tensors",
        },
      ),
      /module layers\.0\.w1 is both pruned and quantized/,
    );
  });
});
