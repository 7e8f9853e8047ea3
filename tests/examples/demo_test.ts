import assert from "node:assert/strict";
import { dataFile, runScript } from "../_helpers.ts";
import { parseSafetensors } from "../../core/safetensors.ts";
import { compressedFromTensors } from "../../quantizers/serialize.ts";
import { dequantize } from "../../quantizers/dequantize.ts";
import type { QuantizedWeight } from "../../quantizers/quantized_weight.ts";
import type { DemoRow } from "../../examples/demo/report.ts";

const DEMO = new URL("../../examples/demo.ts", import.meta.url).pathname;

function demo(args: string[], env: Record<string, string> = {}) {
  return runScript(DEMO, ["--quiet", ...args], env);
}

Deno.test("the demo prints JSON rows, writes --out atomically and resumes finished methods from its journal", async () => {
  if (!dataFile("stories260K/stories260K.bin") || !dataFile("text/tinystories_val_sample.txt")) {
    return;
  }
  const dir = await Deno.makeTempDir();
  try {
    const args = [
      "--methods",
      "fp32,rtn-w8,rtn-w4-g32",
      "--eval",
      "tinystories",
      "--eval-tokens",
      "600",
      "--calib-samples",
      "2",
      "--json",
      "--resume",
      `${dir}/journal`,
      "--out",
      `${dir}/model.safetensors`,
      "--plot",
      `${dir}/plot.svg`,
    ];
    const first = await demo(args);
    assert.equal(first.code, 0, first.stderr);
    const rows = JSON.parse(first.stdout) as DemoRow[];
    assert.deepEqual(rows.map((r) => r.method), ["fp32", "rtn-w8", "rtn-w4-g32"]);
    assert.equal(rows[0]!.bitsPerWeight, 32);
    assert.equal(rows[0]!.sizeBytes, 260_032 * 4);
    assert.equal(rows[0]!.tokens.tinystories, 599);
    assert.ok(
      Math.abs(rows[1]!.perplexity.tinystories! / rows[0]!.perplexity.tinystories! - 1) < 0.01,
    );
    // 4-bit codes, f16 scales and 4-bit zeros per 32 columns (172 = 5·32 + 12 for w2).
    assert.ok(
      rows[2]!.bitsPerWeight > 4.6 && rows[2]!.bitsPerWeight < 4.8,
      String(rows[2]!.bitsPerWeight),
    );
    const svg = await Deno.readTextFile(`${dir}/plot.svg`);
    assert.ok(svg.startsWith("<svg") && svg.includes("rtn-w4-g32"));
    const files = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(files.filter((f) => f.endsWith(".safetensors")), [
      "model.rtn-w4-g32.safetensors",
      "model.rtn-w8.safetensors",
    ]);
    assert.ok(!files.some((f) => f.endsWith(".tmp")));
    const st = parseSafetensors(await Deno.readFile(`${dir}/model.rtn-w8.safetensors`));
    assert.equal(st.metadata.method, "rtn-w8");
    assert.deepEqual(st.tensors.get("model.layers.4.mlp.down_proj.weight")!.shape, [64, 172]);

    const second = await demo(args);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stderr, /rtn-w4-g32: taken from the journal/);
    assert.deepEqual(JSON.parse(second.stdout), rows);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("without a model file and offline, the demo says so and compares methods on synthetic layers", async () => {
  const empty = await Deno.makeTempDir();
  try {
    const r = await demo(["--methods", "fp32,rtn-w3,gptq-w3", "--json", "--no-plot"], {
      LLMC_DATA: empty,
      LLMC_CACHE: `${empty}/cache`,
      // No network: a proxy that refuses connections.
      HTTPS_PROXY: "http://127.0.0.1:9",
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /no model file/);
    assert.match(r.stderr, /LAYER-LEVEL demo on seeded synthetic layers \(not a language model\)/);
    const rows = JSON.parse(r.stdout) as { method: string; layerError: number; perplexity: null }[];
    assert.deepEqual(rows.map((x) => x.method), ["fp32", "rtn-w3", "gptq-w3"]);
    assert.equal(rows[0]!.layerError, 0);
    assert.equal(rows[1]!.perplexity, null);
    assert.ok(rows[2]!.layerError < rows[1]!.layerError, JSON.stringify(rows));
  } finally {
    await Deno.remove(empty, { recursive: true });
  }
});

Deno.test("the demo refuses an unknown method or flag with a clear message", async () => {
  const r = await demo(["--methods", "gptq-w9"]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /Unknown method 'gptq-w9': the bits \(w9\) must be an integer in 2\.\.8/);
  assert.match(r.stderr, /Named methods: fp32, .*, default, all; patterns: rtn-w\{2\.\.8\}/);
  const f = await demo(["--bits", "4"]);
  assert.match(f.stderr, /Unknown flag '--bits'/);
});

Deno.test("the demo's packed output dequantizes to the dense output", async () => {
  if (!dataFile("stories260K/stories260K.bin") || !dataFile("text/tinystories_val_sample.txt")) {
    return;
  }
  const dir = await Deno.makeTempDir();
  try {
    const common = ["--methods", "gptq-w3-g32", "--eval", "tinystories", "--eval-tokens", "300"];
    const run = async (format: string) => {
      const r = await demo([
        ...common,
        "--calib-samples",
        "4",
        "--no-plot",
        "--out",
        `${dir}/${format}.safetensors`,
        "--out-format",
        format,
      ]);
      assert.equal(r.code, 0, r.stderr);
      return parseSafetensors(await Deno.readFile(`${dir}/${format}.safetensors`));
    };
    const dense = await run("dense");
    const packed = await run("packed");
    const layers = compressedFromTensors(packed.tensors, packed.metadata);
    assert.equal(layers.size, 35);
    const wv = dequantize(layers.get("layers.2.wv") as QuantizedWeight);
    assert.deepEqual(wv.data, dense.tensors.get("model.layers.2.self_attn.v_proj.weight")!.data);
    assert.deepEqual(packed.tensors.get("norm.weight")!.shape, [64]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a demo run killed after some blocks continues from its journal to the same result", async () => {
  if (!dataFile("stories260K/stories260K.bin") || !dataFile("text/tinystories_val_sample.txt")) {
    return;
  }
  const dir = await Deno.makeTempDir();
  try {
    const args = [
      "--methods",
      "gptq-w3",
      "--eval",
      "tinystories",
      "--eval-tokens",
      "400",
      "--calib-samples",
      "48",
      "--no-plot",
      "--json",
      "--quiet",
    ];
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", DEMO, ...args, "--resume", `${dir}/j`],
      stdout: "null",
      stderr: "null",
    }).spawn();
    // Kill it as soon as the first block is in the journal.
    for (let i = 0; i < 600; i++) {
      const journaled = await Array.fromAsync(Deno.readDir(`${dir}/j`)).then(
        (entries) => entries.some((e) => /^gptq-w3\.block-\d+\.safetensors$/.test(e.name)),
        () => false,
      );
      if (journaled) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill("SIGKILL");
    await child.status;
    const resumed = await demo([...args, "--resume", `${dir}/j`]);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(
      resumed.stderr,
      /gptq-w3: (resuming after \d+ finished modules|taken from the journal)/,
    );
    const fresh = await demo(args);
    const [a, b] = [JSON.parse(resumed.stdout)[0], JSON.parse(fresh.stdout)[0]];
    assert.equal(a.perplexity.tinystories, b.perplexity.tinystories);
    assert.equal(a.layerError, b.layerError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
