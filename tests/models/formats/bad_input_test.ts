import assert from "node:assert/strict";
import { readSafetensors, writeSafetensors } from "../../../core/safetensors_file.ts";
import { loadModel } from "../../../models/causal_lm.ts";
import { writeCheckpoint } from "../../../models/formats/write_checkpoint.ts";
import { editConfig, fixtureDir } from "../_hf_fixtures.ts";
import { quantizedModules } from "./_grids.ts";

/** A folder of `format`, copied and altered by `edit` before each load. */
async function folders(format: "gptq" | "compressed-tensors") {
  const root = await Deno.makeTempDir({ prefix: "llmc-bad-" });
  const lm = await loadModel(fixtureDir("llama"));
  const modules = await quantizedModules(
    lm.model,
    () => ({ bits: 4, groupSize: 32, symmetric: false, actOrder: false }),
  );
  await writeCheckpoint(lm.model, modules, `${root}/base`, { format });
  let n = 0;
  return {
    root,
    async variant(
      config: (q: Record<string, unknown>, json: Record<string, unknown>) => void,
      tensors?: (t: Map<string, unknown>) => void,
    ): Promise<string> {
      const dir = `${root}/v${n++}`;
      await Deno.mkdir(dir);
      for (const e of Deno.readDirSync(`${root}/base`)) {
        await Deno.copyFile(`${root}/base/${e.name}`, `${dir}/${e.name}`);
      }
      await editConfig(
        dir,
        (json) => config(json.quantization_config as Record<string, unknown>, json),
      );
      if (tensors) {
        const st = await readSafetensors(`${dir}/model.safetensors`);
        tensors(st.tensors as Map<string, unknown>);
        await writeSafetensors(`${dir}/model.safetensors`, st.tensors, st.metadata);
      }
      return dir;
    },
  };
}

Deno.test("a GPTQ folder whose quantization_config or tensors we do not read is refused naming the key or the tensor", async () => {
  const f = await folders("gptq");
  try {
    const cases: [Parameters<typeof f.variant>, RegExp][] = [
      [
        [(q) => q.quant_method = "awq"],
        /config\.json: quantization_config\.quant_method = "awq" is not supported: GPTQ \("gptq"\) and compressed-tensors/,
      ],
      [
        [(q) => q.bits = 5],
        /quantization_config\.bits = 5 is not supported: GPTQ checkpoints of 2, 3, 4 or 8 bits are read/,
      ],
      [
        [(q) => q.checkpoint_format = "marlin"],
        /quantization_config\.checkpoint_format = "marlin" is not supported/,
      ],
      [
        [(q) => q.lm_head = true],
        /quantization_config\.lm_head = true is not supported: a quantized lm_head is not read/,
      ],
      [
        [(q) => q.dynamic = { "-:.*down": {} }],
        /quantization_config\.dynamic = .* per-module overrides are not read/,
      ],
      [[(_, json) => json.quantization_config = "gptq"], /quantization_config must be an object/],
      [
        [() => {}, (t) => t.delete("model.layers.1.self_attn.q_proj.qzeros")],
        /model\.safetensors: missing tensor model\.layers\.1\.self_attn\.q_proj\.qzeros \(bits 4, group_size 32\)/,
      ],
      [
        [(q) => q.group_size = 64],
        /tensor model\.layers\.0\.self_attn\.q_proj\.qzeros has shape \[2,8\]; \[1,8\] fits \[64, 64\] with bits 4, group_size 64/,
      ],
      [
        [(q) => q.bits = 8],
        /tensor model\.layers\.0\.self_attn\.q_proj\.qweight has shape \[8,64\]; \[16,64\] fits \[64, 64\] with bits 8, group_size 32/,
      ],
      [
        [(q) => q.desc_act = true, (t) => t.delete("model.layers.2.mlp.up_proj.g_idx")],
        /missing tensor model\.layers\.2\.mlp\.up_proj\.g_idx/,
      ],
    ];
    for (const [args, re] of cases) {
      await assert.rejects(loadModel(await f.variant(...args)), re, String(re));
    }
    // Without act-order g_idx may be absent (older checkpoints): the groups are ⌊k/G⌋.
    const noGIdx = await f.variant(() => {}, (t) => t.delete("model.layers.2.mlp.up_proj.g_idx"));
    const [a, b] = await Promise.all([loadModel(noGIdx), loadModel(`${f.root}/base`)]);
    assert.deepEqual(
      await a.logits([1, 2, 3], { backend: "cpu" }),
      await b.logits([1, 2, 3], { backend: "cpu" }),
    );
  } finally {
    await Deno.remove(f.root, { recursive: true });
  }
});

Deno.test("a compressed-tensors folder whose quantization_config or tensors we do not read is refused naming the key or the tensor", async () => {
  const f = await folders("compressed-tensors");
  type Group = { weights: Record<string, unknown>; input_activations?: unknown; targets: string[] };
  const g0 = (q: Record<string, unknown>) => (q.config_groups as Record<string, Group>).group_0!;
  try {
    const cases: [Parameters<typeof f.variant>, RegExp][] = [
      [
        [(q) => q.quantization_status = "frozen"],
        /quantization_status = "frozen" is not supported: compressed folders/,
      ],
      [
        [(q) => q.format = "float-quantized"],
        /quantization_config\.format = "float-quantized" is not supported/,
      ],
      [
        [(q) => g0(q).input_activations = { num_bits: 8 }],
        /config_groups\.group_0\.input_activations = .* only weights are quantized/,
      ],
      [
        [(q) => g0(q).weights.type = "float"],
        /config_groups\.group_0\.weights\.type = "float" is not supported/,
      ],
      [
        [(q) => g0(q).weights.num_bits = 16],
        /config_groups\.group_0\.weights\.num_bits = 16 is not supported: 1 to 8 bits are packed/,
      ],
      [
        [(q) => g0(q).weights.strategy = "tensor"],
        /weights\.strategy = "tensor" is not supported: strategies "channel" and "group"/,
      ],
      [[(q) => q.ignore = []], /quantization_config quantizes lm_head, which is not read/],
      [
        [(q) => q.sparsity_config = { format: "sparse-24-bitmask" }],
        /model\.layers\.0\.self_attn\.q_proj is both quantized \(group_0\) and sparse \(sparse-24-bitmask\): stacked compression is not read/,
      ],
      [
        [(q) => q.sparsity_config = { format: "marlin-24" }],
        /quantization_config\.sparsity_config\.format = "marlin-24" is not supported/,
      ],
      [
        [() => {}, (t) => t.delete("model.layers.0.mlp.down_proj.weight_zero_point")],
        /missing tensor model\.layers\.0\.mlp\.down_proj\.weight_zero_point \(num_bits 4, group_size 32, symmetric false\)/,
      ],
      [
        [(q) => g0(q).weights.group_size = 64],
        /tensor model\.layers\.0\.self_attn\.q_proj\.weight_scale has shape \[64,2\]; \[64,1\] fits \[64, 64\] with num_bits 4, group_size 64/,
      ],
      [
        [(q) => g0(q).weights.group_size = 48],
        /model\.layers\.0\.self_attn\.q_proj: group_size 48 does not divide its 64 input features/,
      ],
      [
        [(q) => g0(q).weights.num_bits = 8],
        /tensor model\.layers\.0\.self_attn\.q_proj\.weight_packed has shape \[64,8\]; \[64,16\] fits/,
      ],
    ];
    for (const [args, re] of cases) {
      await assert.rejects(loadModel(await f.variant(...args)), re, String(re));
    }
  } finally {
    await Deno.remove(f.root, { recursive: true });
  }
});
