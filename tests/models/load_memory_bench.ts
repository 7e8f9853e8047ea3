/**
 * Host memory of `loadModel` on a real-size checkpoint: writes a random-weight
 * bf16 folder at Llama-3.2-1B shapes (hidden 2048, MLP 8192, 16 layers, GQA
 * 32/8, vocabulary 128,256, tied, llama3 rope; 1.24 B parameters, 2.47 GB in
 * three shards with an index), then, in a fresh process, loads it, runs the
 * logits of 8 tokens on the CPU (every block widened once, the classifier in
 * chunks) and reports the peak resident memory against the checkpoint's size.
 *
 *     deno run -A tests/models/load_memory_bench.ts [--dir=DIR] [--keep]
 *
 * Uses the file system and subprocesses; reads /proc (Linux).
 *
 * @module
 */

import { f32ToBf16Bits } from "../../core/convert.ts";
import { writeSafetensors } from "../../core/safetensors_file.ts";
import type { Tensor } from "../../core/tensor.ts";
import { loadModel } from "../../models/causal_lm.ts";

const SHAPE = {
  hidden: 2048,
  inter: 8192,
  layers: 16,
  heads: 32,
  kvHeads: 8,
  headDim: 64,
  vocab: 128256,
};

function procStatus(key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(
    Deno.readTextFileSync("/proc/self/status"),
  );
  return m ? Number(m[1]) * 1024 : NaN;
}

/** Random bf16 weights, uniform in ±scale (xorshift32, seeded per tensor). */
function randomBf16(shape: number[], seed: number, scale: number): Tensor<"bf16"> {
  const n = shape.reduce((a, b) => a * b, 1);
  // A table of 4096 bf16 values, indexed by a xorshift stream: fast enough for 1.2 B values.
  const table = new Uint16Array(4096);
  let s = (seed * 2654435761) >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>>= 0);
  };
  for (let i = 0; i < table.length; i++) {
    table[i] = f32ToBf16Bits((next() / 2 ** 32 - 0.5) * 2 * scale);
  }
  const data = new Uint16Array(n);
  for (let i = 0; i < n; i++) data[i] = table[next() & 4095]!;
  return { dtype: "bf16", shape, data };
}

async function writeFolder(dir: string): Promise<number> {
  const { hidden: d, inter, layers, heads, kvHeads, headDim, vocab } = SHAPE;
  const q = heads * headDim, kv = kvHeads * headDim;
  const names: [string, number[]][] = [["model.embed_tokens.weight", [vocab, d]]];
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}`;
    names.push(
      [`${p}.input_layernorm.weight`, [d]],
      [`${p}.self_attn.q_proj.weight`, [q, d]],
      [`${p}.self_attn.k_proj.weight`, [kv, d]],
      [`${p}.self_attn.v_proj.weight`, [kv, d]],
      [`${p}.self_attn.o_proj.weight`, [d, q]],
      [`${p}.post_attention_layernorm.weight`, [d]],
      [`${p}.mlp.gate_proj.weight`, [inter, d]],
      [`${p}.mlp.up_proj.weight`, [inter, d]],
      [`${p}.mlp.down_proj.weight`, [d, inter]],
    );
  }
  names.push(["model.norm.weight", [d]]);
  const shards = 3, perShard = Math.ceil(names.length / shards);
  const weightMap: Record<string, string> = {};
  let bytes = 0;
  for (let s = 0; s < shards; s++) {
    const file = `model-0000${s + 1}-of-0000${shards}.safetensors`;
    const tensors = new Map<string, Tensor>();
    names.slice(s * perShard, (s + 1) * perShard).forEach(([name, shape], i) => {
      const norm = shape.length === 1;
      const t = randomBf16(shape, s * 1000 + i + 1, norm ? 1 : 1 / Math.sqrt(shape[1]!));
      if (norm) t.data.fill(f32ToBf16Bits(1));
      tensors.set(name, t);
      weightMap[name] = file;
      bytes += t.data.byteLength;
    });
    await writeSafetensors(`${dir}/${file}`, tensors, { format: "pt" });
  }
  await Deno.writeTextFile(
    `${dir}/model.safetensors.index.json`,
    JSON.stringify({ metadata: { total_size: bytes }, weight_map: weightMap }),
  );
  await Deno.writeTextFile(
    `${dir}/config.json`,
    JSON.stringify({
      architectures: ["LlamaForCausalLM"],
      model_type: "llama",
      hidden_size: d,
      intermediate_size: inter,
      num_hidden_layers: layers,
      num_attention_heads: heads,
      num_key_value_heads: kvHeads,
      head_dim: headDim,
      vocab_size: vocab,
      max_position_embeddings: 131072,
      rms_norm_eps: 1e-5,
      tie_word_embeddings: true,
      rope_parameters: {
        rope_type: "llama3",
        rope_theta: 500000,
        factor: 32,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 8192,
      },
    }),
  );
  return bytes;
}

async function measure(dir: string): Promise<void> {
  const rss0 = procStatus("VmRSS");
  const t0 = performance.now();
  const lm = await loadModel(dir);
  const loadSeconds = (performance.now() - t0) / 1000;
  const afterLoad = procStatus("VmHWM");
  const t1 = performance.now();
  const logits = await lm.logits([1, 791, 4062, 14198, 39935, 35308, 927, 279], { backend: "cpu" });
  const logitsSeconds = (performance.now() - t1) / 1000;
  if (!logits.every(Number.isFinite)) throw new Error("non-finite logits");
  console.log(JSON.stringify({
    baselineRss: rss0,
    peakRssAfterLoad: afterLoad,
    peakRss: procStatus("VmHWM"),
    loadSeconds,
    logitsSeconds,
  }));
}

if (import.meta.main) {
  const measureDir = Deno.args.find((a) => a.startsWith("--measure="))?.slice(10);
  if (measureDir) {
    await measure(measureDir);
  } else {
    const given = Deno.args.find((a) => a.startsWith("--dir="))?.slice(6);
    const dir = given ?? await Deno.makeTempDir({ prefix: "llmc-1b-" });
    await Deno.mkdir(dir, { recursive: true });
    const t0 = performance.now();
    const bytes = await writeFolder(dir);
    console.error(
      `wrote ${(bytes / 1e9).toFixed(2)} GB in ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s to ${dir}`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL(import.meta.url).pathname, `--measure=${dir}`],
      stderr: "inherit",
    }).output();
    if (!out.success) throw new Error("the measuring process failed");
    const m = JSON.parse(new TextDecoder().decode(out.stdout));
    const gib = (b: number) => (b / 2 ** 30).toFixed(2);
    console.log(
      `checkpoint ${gib(bytes)} GiB (bf16); peak RSS ${gib(m.peakRss)} GiB = ${
        (m.peakRss / bytes).toFixed(3)
      }× ` +
        `(after load ${gib(m.peakRssAfterLoad)} GiB, process baseline ${
          gib(m.baselineRss)
        } GiB); ` +
        `load ${m.loadSeconds.toFixed(1)} s, logits of 8 tokens on the CPU ${
          m.logitsSeconds.toFixed(1)
        } s`,
    );
    if (!Deno.args.includes("--keep")) await Deno.remove(dir, { recursive: true });
  }
}
