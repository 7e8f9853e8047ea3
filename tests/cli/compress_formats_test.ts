import assert from "node:assert/strict";
import { readSafetensors } from "../../core/safetensors_file.ts";
import { loadModel } from "../../models/causal_lm.ts";
import { isPackedLinear } from "../../models/formats/packed_linear.ts";
import { writeCheckpoint } from "../../models/formats/write_checkpoint.ts";
import { STORED_LINEARS } from "../../models/model.ts";
import { loadTokenizer } from "../../models/tokenizer.ts";
import type { CompressReport } from "../../cli/_compress_command.ts";
import { dataFile } from "../_helpers.ts";
import { cli, common, QWEN3, withDir } from "./_cli.ts";

const QWEN2 = QWEN3.replace(/qwen3$/, "qwen2");

Deno.test("compress --format gptq and compressed-tensors write packed folders whose perplexity equals their dequantized dense folder's", async () => {
  await withDir(async (dir) => {
    const tok = await loadTokenizer(QWEN2);
    const stream = tok.encode(await Deno.readTextFile(`${dir}/calib.txt`)).slice(0, 400);
    const runs: [string, string[]][] = [
      ["gptq", ["--method", "gptq-w4-g32-act", "--format", "gptq"]],
      ["gptq_v2", ["--method", "rtn-w8-sym", "--format", "gptq", "--checkpoint-format", "gptq_v2"]],
      ["ct", ["--method", "gptq-w3-g32", "--format", "compressed-tensors"]],
      ["ct-24", ["--method", "sparsegpt-2:4", "--format", "compressed-tensors", "--dtype", "bf16"]],
    ];
    const results = await Promise.all(
      runs.map(([name, flags]) =>
        cli([...common(dir, QWEN2), ...flags, "--out", `${dir}/${name}`, "--json"])
      ),
    );
    for (let i = 0; i < runs.length; i++) {
      const [name, flags] = runs[i]!, r = results[i]!;
      assert.equal(r.code, 0, r.stderr);
      const report = JSON.parse(r.stdout) as CompressReport;
      assert.equal(report.format, flags[3]);
      const out = `${dir}/${name}`;
      assert.deepEqual([...Deno.readDirSync(out)].map((e) => e.name).sort(), [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
      ]);
      const config = JSON.parse(await Deno.readTextFile(`${out}/config.json`));
      assert.equal(
        config.quantization_config.quant_method,
        flags[3] === "gptq" ? "gptq" : "compressed-tensors",
      );
      if (name === "ct-24") {
        assert.equal(config.quantization_config.sparsity_config.format, "sparse-24-bitmask");
      }
      assert.equal(config.transformers_version, "5.17.0"); // the source's other keys are kept
      const st = await readSafetensors(`${out}/model.safetensors`);
      assert.equal(st.tensors.get("model.embed_tokens.weight")!.dtype, "bf16");
      assert.equal(st.metadata.method, flags[1]);

      const packed = await loadModel(out);
      assert.ok(isPackedLinear(packed.model.layers[1]![STORED_LINEARS]!.w2.weight));
      // The dense folder of the same weights: the packed folder widened at load, written as float32.
      const widened = await loadModel(out, { widen: "load" });
      await writeCheckpoint(widened.model, new Map(), `${out}-dense`);
      const dense = await loadModel(`${out}-dense`);
      const [a, b] = await Promise.all([
        packed.perplexity(stream, { backend: "cpu", seqLen: 64 }),
        dense.perplexity(stream, { backend: "cpu", seqLen: 64 }),
      ]);
      assert.ok(
        Math.abs(a.perplexity / b.perplexity - 1) < 1e-4,
        `${name}: ${a.perplexity} vs ${b.perplexity}`,
      );
      assert.ok(a.tokens > 300);
    }
  });
});

Deno.test("compress --format gptq --resume after a stop writes the folder an uninterrupted run writes (the journal keeps the grids)", async () => {
  await withDir(async (dir) => {
    const args = [...common(dir, QWEN3), "--method", "gptq-w4-g32", "--format", "gptq"];
    const stopped = await cli([...args, "--out", `${dir}/resumed`], {
      LLMC_COMPRESS_STOP_AFTER_BLOCK: "0",
    });
    assert.equal(stopped.code, 1);
    const [resumed, fresh] = await Promise.all([
      cli([...args, "--out", `${dir}/resumed`, "--resume"]),
      cli([...args, "--out", `${dir}/fresh`]),
    ]);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.equal(fresh.code, 0, fresh.stderr);
    assert.deepEqual(
      await Deno.readFile(`${dir}/resumed/model.safetensors`),
      await Deno.readFile(`${dir}/fresh/model.safetensors`),
    );
  });
});

Deno.test("compress --format gptq refuses a zero point of 0 in v1 and keeps the journal; --resume with --checkpoint-format gptq_v2 writes the folder", async () => {
  const bin = dataFile("stories260K/stories260K.bin");
  if (!bin) return;
  await withDir(async (dir) => {
    // stories260K's w2 has 172 inputs: its last act-order group of 12 holds a zero point of 0.
    const args = [
      ...common(dir, bin, 64),
      "--method",
      "gptq-w4-g32-act",
      "--format",
      "gptq",
      "--out",
      `${dir}/out`,
    ];
    const v1 = await cli(args);
    assert.equal(v1.code, 1);
    assert.match(
      v1.stderr,
      /Cannot write module layers\.\d\.w2: .*zero point 0 .*\n.*journal keeps every compressed block: the same command with --resume and --checkpoint-format gptq_v2/,
    );
    assert.ok(!(await Deno.stat(`${dir}/out`).catch(() => null)), "no half folder");
    const v2 = await cli([...args, "--resume", "--checkpoint-format", "gptq_v2", "--json"]);
    assert.equal(v2.code, 0, v2.stderr);
    assert.equal((JSON.parse(v2.stdout) as CompressReport).resumedModules, 35);
    const config = JSON.parse(await Deno.readTextFile(`${dir}/out/config.json`));
    assert.equal(config.quantization_config.checkpoint_format, "gptq_v2");
  });
});
