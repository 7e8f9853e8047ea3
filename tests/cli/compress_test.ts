import assert from "node:assert/strict";
import { assertClose, dataFile } from "../_helpers.ts";
import { readSafetensors } from "../../core/safetensors_file.ts";
import { parseMethodId } from "../../examples/demo/methods.ts";
import { causalLM, loadModel } from "../../models/causal_lm.ts";
import { withCompressedWeights } from "../../models/compressible.ts";
import { loadTokenizer } from "../../models/tokenizer.ts";
import { calibrationSet } from "../../cli/_calibration.ts";
import { parseCompressArgs, UsageError } from "../../cli/_compress_args.ts";
import type { CompressReport } from "../../cli/_compress_command.ts";
import { compressRun } from "../../cli/_compress_run.ts";
import { cli, common, LENGTH, LLAMA, QWEN3, SAMPLES, withDir } from "./_cli.ts";

function relRms(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

Deno.test("compress --json reports every module with a finite layer error, and its dense folder loads back as the in-memory compressed model", async () => {
  await withDir(async (dir) => {
    const original = await loadModel(LLAMA);
    const tokenizer = await loadTokenizer(LLAMA);
    const ids = tokenizer.encode("the cat sat on a warm mat and ran home fast.");
    const before = await original.logits(ids, { backend: "cpu" });
    const calib = await calibrationSet(tokenizer, `${dir}/calib.txt`, {
      samples: SAMPLES,
      length: LENGTH,
      seed: 0,
      maxLength: original.config.seqLen,
    });
    for (const method of ["rtn-w4-g32", "gptq-w4-g32"]) {
      const out = `${dir}/${method}`;
      const r = await cli([...common(dir), "--method", method, "--out", out, "--json"]);
      assert.equal(r.code, 0, r.stderr);
      const report = JSON.parse(r.stdout) as CompressReport;
      assert.equal(report.method, method);
      assert.deepEqual(report.calibration, {
        source: `${dir}/calib.txt`,
        samples: SAMPLES,
        length: LENGTH,
        seed: 0,
        tokens: calib.tokens,
        tokenizer: LLAMA,
      });
      assert.equal(report.modules.length, 3 * 7);
      assert.deepEqual(report.modules.slice(0, 7).map((m) => m.name), [
        "layers.0.wq",
        "layers.0.wk",
        "layers.0.wv",
        "layers.0.wo",
        "layers.0.w1",
        "layers.0.w3",
        "layers.0.w2",
      ]);
      for (const m of report.modules) {
        assert.ok(m.layerError !== null && m.layerError > 0 && m.layerError < 0.05, m.name);
        // 4-bit codes, an f16 scale and a 4-bit zero per 32 columns.
        assert.equal(m.bits, 4 + 20 / 32);
        assert.equal(m.density, 1);
      }
      assert.equal(report.bitsPerWeight, 4.625);
      assert.deepEqual(Object.keys(report.seconds), [
        "load",
        "calibration",
        "compress",
        "write",
        "total",
        "pipeline",
      ]);
      const { pipeline, ...phases } = report.seconds;
      assert.ok(Object.values(phases).every((s) => s >= 0));
      assert.ok(Object.values(pipeline).every((s) => s >= 0));
      assert.ok(pipeline.compress <= report.seconds.compress);
      if (Deno.build.os === "linux") assert.ok(report.memory.hostPeakBytes! > 10e6);
      assert.equal(report.memory.gpuPeakBytes, 0);

      const files = [...Deno.readDirSync(out)].map((e) => e.name).sort();
      assert.deepEqual(files, [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
      ]);
      assert.ok(!(await Deno.stat(`${out}.partial`).catch(() => null)), "the journal is gone");
      const config = JSON.parse(await Deno.readTextFile(`${out}/config.json`));
      assert.equal(config.dtype, "float32");
      assert.equal(config.transformers_version, "5.17.0"); // the source's other keys are kept
      const st = await readSafetensors(`${out}/model.safetensors`);
      // Linears in --dtype (f32 by default), the rest in the source's bf16.
      for (const [name, t] of st.tensors) {
        const linear = /_proj\.weight$/.test(name);
        assert.equal(t.dtype, linear ? "f32" : "bf16", name);
      }
      assert.equal(st.metadata.method, method);

      const dense = await loadModel(out);
      const after = await dense.logits(ids, { backend: "cpu" });
      const drift = relRms(after, before);
      // The fixture's weights are random, so 4-bit rounding (about 2^-4 of each
      // weight's range) moves its logits by about a third: 8 bits move them by 0.02.
      assert.ok(drift > 0.05 && drift < 0.5, `relative RMS change of the logits ${drift}`);
      // The same compression in this process: same errors, same logits.
      const run = await compressRun(original, calib.windows, parseMethodId(method).recipe, {
        backend: "cpu",
      });
      assert.deepEqual(report.modules.map((m) => m.layerError), [
        ...[...run.modules.values()].map((m) => m.layerError),
      ]);
      const inMemory = causalLM(withCompressedWeights(original.model, run.modules));
      assertClose(after, await inMemory.logits(ids, { backend: "cpu" }), {
        rtol: 1e-5,
        atol: 1e-6,
        message: method,
      });
    }
  });
});

Deno.test("compress --resume after a run stopped after block 1 writes the folder an uninterrupted run writes", async () => {
  await withDir(async (dir) => {
    const args = [...common(dir, QWEN3), "--method", "gptq-w4-g32", "--json"];
    const stopped = await cli([...args, "--out", `${dir}/resumed`], {
      LLMC_COMPRESS_STOP_AFTER_BLOCK: "1",
    });
    assert.equal(stopped.code, 1);
    assert.match(stopped.stderr, /stopped after block 1 as LLMC_COMPRESS_STOP_AFTER_BLOCK asks/);
    assert.match(
      stopped.stderr,
      /resumed\.partial\/journal keeps the finished blocks: .* --resume/,
    );
    assert.ok(!(await Deno.stat(`${dir}/resumed`).catch(() => null)), "no half output folder");
    assert.ok((await Deno.stat(`${dir}/resumed.partial/journal/journal.json`)).isFile);

    const again = await cli([...args, "--out", `${dir}/resumed`]);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /holds the journal of an unfinished run: pass --resume/);

    const resumed = await cli([...args, "--out", `${dir}/resumed`, "--resume"]);
    assert.equal(resumed.code, 0, resumed.stderr);
    const fresh = await cli([...args, "--out", `${dir}/fresh`]);
    assert.equal(fresh.code, 0, fresh.stderr);
    const [a, b] = [resumed, fresh].map((r) => JSON.parse(r.stdout) as CompressReport);
    assert.equal(a!.resumedModules, 14);
    assert.equal(b!.resumedModules, 0);
    assert.deepEqual(a!.modules.map((m) => m.layerError), b!.modules.map((m) => m.layerError));
    assert.deepEqual(
      await Deno.readFile(`${dir}/resumed/model.safetensors`),
      await Deno.readFile(`${dir}/fresh/model.safetensors`),
    );
    assert.ok(!(await Deno.stat(`${dir}/resumed.partial`).catch(() => null)));

    // A journal of other settings is refused; --force starts over and replaces the folder.
    const stop0 = await cli([...args, "--out", `${dir}/fresh`, "--force"], {
      LLMC_COMPRESS_STOP_AFTER_BLOCK: "0",
    });
    assert.equal(stop0.code, 1);
    assert.ok((await Deno.stat(`${dir}/fresh/model.safetensors`)).isFile, "the old folder stays");
    const other = await cli([
      ...args,
      "--seed",
      "1",
      "--out",
      `${dir}/fresh`,
      "--resume",
      "--force",
    ]);
    assert.equal(other.code, 2);
    assert.match(other.stderr, /journal of a run with another model, method or calibration/);
    const forced = await cli([...args, "--seed", "1", "--out", `${dir}/fresh`, "--force"]);
    assert.equal(forced.code, 0, forced.stderr);
    assert.equal((JSON.parse(forced.stdout) as CompressReport).calibration.seed, 1);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
      "calib.txt",
      "fresh",
      "resumed",
    ]);
  });
});

Deno.test("compress refuses bad flags, bad method ids, a non-empty --out and methods a format cannot hold with exit status 2", async () => {
  await withDir(async (dir) => {
    await Deno.mkdir(`${dir}/full`);
    await Deno.writeTextFile(`${dir}/full/x`, "x");
    const base = [...common(dir), "--method", "rtn-w4"];
    const cases: [string[], RegExp][] = [
      [[...base, "--out", `${dir}/o`, "--bits", "4"], /Unknown flag '--bits'/],
      [["--calib", "c4"], /Missing --model, --method, --out/],
      [[...common(dir), "--out", `${dir}/o`], /Missing --method/],
      [
        [...common(dir), "--method", "gptq-w9", "--out", `${dir}/o`],
        /--method: Unknown method 'gptq-w9': the bits \(w9\) must be an integer in 2\.\.8\. Named methods: fp32, .*; patterns: rtn-w\{2\.\.8\}\[-g\{G\}\]/,
      ],
      [[...base, "--out", `${dir}/full`], /--out .*full exists and is not empty: pass --force/],
      [
        [...common(dir), "--method", "sparsegpt-50", "--out", `${dir}/o`, "--format", "gptq"],
        /--format gptq holds uniform grids from one rtn or gptq stage: method sparsegpt-50 runs sparsegpt\. Use --format dense/,
      ],
      [
        [...common(dir), "--method", "hadamard-gptq-w3", "--out", `${dir}/o`, "--format", "gptq"],
        /method hadamard-gptq-w3 runs rotate → gptq/,
      ],
      [
        [...common(dir), "--method", "rtn-w5", "--out", `${dir}/o`, "--format", "gptq"],
        /--format gptq packs 2, 3, 4, 8-bit codes: method rtn-w5 has 5/,
      ],
      [
        [
          ...common(dir),
          "--method",
          "rtn-w4-g48",
          "--out",
          `${dir}/o`,
          "--format",
          "compressed-tensors",
        ],
        /--format compressed-tensors needs groups that divide every linear's inputs: method rtn-w4-g48 has groups of 48, and 64, 160 input features/,
      ],
      [
        [
          ...common(dir),
          "--method",
          "sparsegpt-50-w4",
          "--out",
          `${dir}/o`,
          "--format",
          "compressed-tensors",
        ],
        /--format compressed-tensors holds uniform grids from one rtn or gptq stage or pruned weights from one pruning stage: method sparsegpt-50-w4 runs sparsegpt\. Use --format dense/,
      ],
      [
        [...base, "--out", `${dir}/o`, "--format", "gguf"],
        /--format must be dense, gptq, compressed-tensors: got 'gguf'/,
      ],
      [
        [...base, "--out", `${dir}/o`, "--format", "gptq", "--dtype", "bf16"],
        /--dtype sets the float weights of --format dense and compressed-tensors; --format gptq stores them packed/,
      ],
      [
        [...base, "--out", `${dir}/o`, "--dtype", "f8"],
        /--dtype must be f32, f16 or bf16: got 'f8'/,
      ],
      [
        [...base, "--out", `${dir}/o`, "--checkpoint-format", "gptq_v2"],
        /--checkpoint-format applies to --format gptq, not dense/,
      ],
      [
        [...base, "--out", `${dir}/o`, "--calib-samples", "0"],
        /--calib-samples needs an integer ≥ 1/,
      ],
      [
        [...base, "--out", `${dir}/o`, "--calib", "wikitext2"],
        /WikiText-2 test is for evaluation only/,
      ],
      [[...base, "--out", `${dir}/o`, "--calib", `${dir}/none.txt`], /is neither a corpus/],
      [[...base, "--out", `${dir}/o`, "--model", `${dir}/none`], /--model .*none: no such file/],
      [[...base, "--out", `${dir}/o`, "--backend", "tpu"], /--backend must be auto, cpu or webgpu/],
    ];
    const results = await Promise.all(cases.map(([args]) => cli(args)));
    results.forEach((r, i) => {
      assert.equal(r.code, 2, `${cases[i]![0].join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, cases[i]![1]);
      assert.match(r.stderr, /deno task compress --help lists the flags/);
    });
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["calib.txt", "full"]);
    const [help, list] = await Promise.all([cli(["--help"]), cli(["--list"])]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: deno task compress --model PATH --method ID --out DIR/);
    assert.equal(list.code, 0);
    assert.match(list.stdout, /^sparsegpt-50 /m);
    assert.match(list.stdout, /gptq-w\{2\.\.8\}\[-g\{G\}\]\[-act\]\[-sym\] .*gptq-w4-g128/);
  });
});

Deno.test("compress's flags: defaults, --flag=value, and the usage errors before any file is read", () => {
  const line = parseCompressArgs(["--model=m", "--method", "gptq-w4-g128", "--out", "o//"]);
  assert.deepEqual(line, {
    kind: "run",
    args: {
      model: "m",
      method: "gptq-w4-g128",
      out: "o",
      calib: "c4",
      calibSamples: 128,
      calibLen: 2048,
      seed: 0,
      format: "dense",
      dtype: "f32",
      checkpointFormat: "gptq",
      backend: "auto",
      json: false,
      quiet: false,
      resume: false,
      force: false,
    },
  });
  assert.equal(parseCompressArgs(["--model", "m", "--help"]).kind, "help");
  assert.equal(parseCompressArgs(["--backend", "cpu", "--backend=webgpu", "--list"]).kind, "list");
  const last = parseCompressArgs(["--model", "m", "--method", "rtn-w4", "--out", "o", "--seed=2"]);
  assert.equal(last.kind === "run" && last.args.seed, 2);
  assert.throws(() => parseCompressArgs(["--seed", "-1"]), UsageError);
  assert.throws(() => parseCompressArgs(["--bad", "--help"]), /Unknown flag '--bad'/);
  assert.throws(() => parseCompressArgs(["model"]), /Unexpected argument 'model'/);
  assert.throws(() => parseCompressArgs(["--model"]), /--model needs a value/);
  for (const method of ["w8a8-int8", "quarot-w4a4"]) {
    assert.throws(
      () => parseCompressArgs(["--model", "m", "--method", method, "--out", "o"]),
      /quantizes activations.*writes weights only/,
    );
  }
});

Deno.test("compress --backend webgpu runs GPTQ's solver on the GPU, to the CPU's layer errors", async () => {
  const adapter = await navigator.gpu?.requestAdapter();
  if (!adapter) {
    console.warn("skipped: no WebGPU adapter");
    return;
  }
  await withDir(async (dir) => {
    const run = (backend: string) =>
      cli([
        ...common(dir),
        "--method",
        "gptq-w4-g32",
        "--backend",
        backend,
        "--out",
        `${dir}/${backend}`,
        "--json",
      ]);
    const [gpu, cpu] = await Promise.all([run("webgpu"), run("cpu")]);
    assert.equal(gpu.code, 0, gpu.stderr);
    const [g, c] = [gpu, cpu].map((r) => JSON.parse(r.stdout) as CompressReport);
    assert.ok(g!.memory.gpuPeakBytes! > 100_000, String(g!.memory.gpuPeakBytes));
    assert.equal(c!.memory.gpuPeakBytes, 0);
    assertClose(g!.modules.map((m) => m.layerError!), c!.modules.map((m) => m.layerError!), {
      rtol: 0.05,
    });
  });
});

Deno.test("compress writes a llama2.c model and its tokenizer as a Hugging Face folder", async () => {
  const bin = dataFile("stories260K/stories260K.bin");
  if (!bin) return;
  await withDir(async (dir) => {
    const r = await cli([
      ...common(dir, bin, 4096),
      "--method",
      "rtn-w4-g32",
      "--out",
      `${dir}/st`,
      "--json",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /note: --calib-len 4096 is longer than the model takes \(512 tokens\)/);
    const report = JSON.parse(r.stdout) as CompressReport;
    assert.match(report.calibration.tokenizer, /stories260K\/tok512\.bin$/);
    assert.equal(report.modules.length, 5 * 7);
    const tok512 = await loadTokenizer(report.calibration.tokenizer);
    const tok = await loadTokenizer(`${dir}/st`);
    const text = "Once upon a time, there was a little cat.";
    assert.deepEqual(tok.encode(text, { bos: true }), tok512.encode(text, { bos: true }));
    const dense = await loadModel(`${dir}/st`);
    assert.equal(dense.config.nLayers, 5);
    assert.equal(dense.blocks.length, 5);
  });
});
