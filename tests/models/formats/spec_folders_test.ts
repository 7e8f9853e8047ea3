import assert from "node:assert/strict";
import { prng } from "../../../core/prng.ts";
import { loadModel } from "../../../models/causal_lm.ts";
import { unpackPackedLinear } from "../../../models/formats/packed_linear.ts";
import { STORED_LINEARS } from "../../../models/model.ts";
import type { LlamaLinear } from "../../../models/model.ts";
import { isPackedLinear } from "../../../models/formats/packed_linear.ts";
import {
  compressedTensorsSpecTensors,
  gptqSpecTensors,
  sparseSpecTensors,
  specFolders,
  type SpecGrid,
  type SpecLinear,
  specPruned,
} from "./_spec_folders.ts";

const IDS = [1, 17, 200, 33, 4, 90, 91, 5, 400, 12, 7, 7, 300, 2];
const HF_OF: Record<string, LlamaLinear> = {
  "self_attn.q_proj": "wq",
  "self_attn.k_proj": "wk",
  "self_attn.v_proj": "wv",
  "self_attn.o_proj": "wo",
  "mlp.gate_proj": "w1",
  "mlp.up_proj": "w3",
  "mlp.down_proj": "w2",
};

/**
 * Loads both folders: the packed one keeps its linears packed with the hand-made
 * codes, and its logits equal the dense folder's bit for bit.
 */
async function checkFolders(
  { packed, dense, grids }: { packed: string; dense: string; grids: Map<string, SpecLinear> },
  kind: "gptq" | "pack-quantized" | "sparse-bitmask",
): Promise<void> {
  try {
    const [p, d] = await Promise.all([loadModel(packed), loadModel(dense)]);
    for (const [module, l] of grids) {
      const m = /^model\.layers\.(\d+)\.(.+)$/.exec(module)!;
      const stored = p.model.layers[+m[1]!]![STORED_LINEARS]![HF_OF[m[2]!]!].weight;
      assert.ok(isPackedLinear(stored) && stored.kind === kind, module);
      if (stored.kind === "sparse-bitmask") continue;
      const q = unpackPackedLinear(stored);
      assert.deepEqual(q.codes, l.codes, `${module} codes`);
      assert.deepEqual(q.scales, l.scales, `${module} scales`);
      assert.deepEqual(q.zeros, Float32Array.from(l.zeros), `${module} zero points`);
      assert.deepEqual(q.gIdx, l.gIdx, `${module} g_idx`);
    }
    const [a, b] = await Promise.all([
      p.logits(IDS, { backend: "cpu" }),
      d.logits(IDS, { backend: "cpu" }),
    ]);
    assert.deepEqual(a, b);
  } finally {
    await Deno.remove(packed, { recursive: true });
    await Deno.remove(dense, { recursive: true });
  }
}

const gptqConfig = (
  bits: number,
  groupSize: number,
  sym: boolean,
  descAct: boolean,
  format: string,
) => ({
  quant_method: "gptq",
  bits,
  group_size: groupSize,
  desc_act: descAct,
  sym,
  checkpoint_format: format,
});

Deno.test("a GPTQ v1 folder packed by hand as AutoGPTQ does (4 bits, act-order groups of 32) loads with its codes and the logits of its dense weights", async () => {
  const grid: SpecGrid = { bits: 4, groupSize: 32, symmetric: false, actOrder: true, minZero: 1 };
  await checkFolders(
    await specFolders(
      "llama",
      () => grid,
      (l) => gptqSpecTensors(l, 1),
      gptqConfig(4, 32, false, true, "gptq"),
      prng(1),
    ),
    "gptq",
  );
});

Deno.test("GPTQ folders packed by hand at 3 bits (codes straddling words), 2 and 8 bits, v1 and v2, load with their codes", async () => {
  const cases: [number, number, boolean, 1 | 2, string][] = [
    [3, -1, true, 2, "qwen2"],
    [3, 32, false, 1, "llama"],
    [2, 16, false, 2, "qwen3"],
    [8, -1, false, 1, "llama"],
  ];
  for (const [bits, groupSize, symmetric, version, fixture] of cases) {
    const grid: SpecGrid = { bits, groupSize, symmetric, actOrder: false, minZero: 1 };
    await checkFolders(
      await specFolders(
        fixture,
        () => grid,
        (l) => gptqSpecTensors(l, version),
        gptqConfig(bits, groupSize, symmetric, false, version === 1 ? "gptq" : "gptq_v2"),
        prng(bits),
      ),
      "gptq",
    );
  }
});

const ctConfig = (weights: Record<string, unknown>, ignore: string[] = ["lm_head"]) => ({
  quant_method: "compressed-tensors",
  format: "pack-quantized",
  quantization_status: "compressed",
  config_groups: {
    group_0: { targets: ["Linear"], weights: { type: "int", dynamic: false, ...weights } },
  },
  ignore,
});

Deno.test("compressed-tensors pack-quantized folders packed by hand as pack_to_int32 does load with their codes and the logits of their dense weights", async () => {
  const cases: [number, number, boolean, boolean, string][] = [
    [4, 32, false, true, "llama"], // asymmetric, act-order g_idx
    [3, -1, true, false, "qwen2"], // 10 codes a word
    [8, 16, true, false, "qwen3"],
  ];
  for (const [bits, groupSize, symmetric, actOrder, fixture] of cases) {
    const grid: SpecGrid = { bits, groupSize, symmetric, actOrder };
    const weights = {
      num_bits: bits,
      symmetric,
      strategy: groupSize > 0 ? "group" : "channel",
      group_size: groupSize > 0 ? groupSize : null,
      actorder: actOrder ? "group" : null,
    };
    await checkFolders(
      await specFolders(
        fixture,
        () => grid,
        (l) => compressedTensorsSpecTensors(l, symmetric, actOrder),
        ctConfig(weights),
        prng(10 + bits),
      ),
      "pack-quantized",
    );
  }
});

Deno.test("GPTQ v1 zero points of 0, as GPTQModel's v2 → v1 conversion stores them (word-wise borrow at 4 bits, modulo 2^b at 3 bits), read back as 0", async () => {
  for (const [bits, wordWise] of [[4, true], [3, false]] as const) {
    const grid: SpecGrid = { bits, groupSize: 16, symmetric: false, actOrder: false, minZero: 0 };
    const folders = await specFolders(
      "llama",
      () => grid,
      (l) => gptqSpecTensors(l, 1, wordWise),
      gptqConfig(bits, 16, false, false, "gptq"),
      prng(20 + bits),
    );
    assert.ok([...folders.grids.values()].some((l) => l.zeros.includes(0)), "zero points of 0");
    await checkFolders(folders, "gptq");
  }
});

Deno.test("compressed-tensors sparse-bitmask and sparse-24-bitmask folders laid out by hand as bitmask_compress does load with the logits of their dense weights", async () => {
  const grid: SpecGrid = { bits: 4, groupSize: -1, symmetric: false, actOrder: false };
  const cases = [
    ["sparse-bitmask", "unstructured", "qwen2"],
    ["sparse-24-bitmask", "2:4", "llama"],
  ] as const;
  for (const [format, structure, fixture] of cases) {
    await checkFolders(
      await specFolders(
        fixture,
        () => grid,
        (l) => sparseSpecTensors(specPruned(l, structure), l.N, l.K, format),
        {
          quant_method: "compressed-tensors",
          sparsity_config: {
            format,
            global_sparsity: 0.5,
            sparsity_structure: structure,
            targets: ["Linear"],
            ignore: ["lm_head"],
            registry_requires_subclass: false,
          },
          transform_config: {},
          version: "0.12.0",
        },
        prng(30),
        (l) => specPruned(l, structure).weight,
      ),
      "sparse-bitmask",
    );
  }
});
