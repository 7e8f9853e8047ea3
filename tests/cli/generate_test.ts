import assert from "node:assert/strict";
import { runScript } from "../_helpers.ts";
import { testGpu } from "../kernels/_gpu.ts";
import { parseGenerateArgs } from "../../cli/generate.ts";
import { UsageError } from "../../cli/_flags.ts";
import { loadModel } from "../../models/causal_lm.ts";
import { decodeSession } from "../../models/generate.ts";
import { loadTokenizer } from "../../models/tokenizer.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const CLI = `${ROOT}cli/generate.ts`;
const LLAMA = `${ROOT}tests/fixtures/hf/models/llama`;

function cli(args: string[]) {
  return runScript(CLI, args);
}

Deno.test("parseGenerateArgs reads the flags with their defaults and refuses bad ones by name", () => {
  const args = parseGenerateArgs(["--model", "m", "--prompt=hi there", "--max-tokens", "5"]);
  assert.deepEqual(args, {
    model: "m",
    prompt: "hi there",
    maxTokens: 5,
    backend: "auto",
    weights: "f16",
    inFlight: 64,
    stepsPerSubmission: 8,
    ignoreEos: false,
    profile: false,
    json: false,
  });
  assert.equal(parseGenerateArgs(["--help"]), null);
  const chunked = parseGenerateArgs(["--model", "m", "--prompt", "x", "--steps-per-submission=4"]);
  assert.equal(chunked?.stepsPerSubmission, 4);
  const bad: [string[], RegExp][] = [
    [["--prompt", "x"], /Missing --model/],
    [["--model", "m"], /Missing --prompt/],
    [["--model", "m", "--prompt", ""], /--prompt is empty/],
    [
      ["--model", "m", "--prompt", "x", "--max-tokens", "0"],
      /--max-tokens needs an integer ≥ 1: got '0'/,
    ],
    [
      ["--model", "m", "--prompt", "x", "--backend", "gpu"],
      /--backend must be auto, cpu or webgpu/,
    ],
    [
      ["--model", "m", "--prompt", "x", "--weights", "bf16"],
      /--weights must be f16 or f32: got 'bf16'/,
    ],
    [["--model", "m", "--prompt", "x", "--temperature", "1"], /Unknown flag '--temperature'/],
    [["--model", "m", "--prompt"], /--prompt needs a value/],
    [
      ["--model", "m", "--prompt", "x", "--steps-per-submission", "0"],
      /--steps-per-submission needs an integer ≥ 1: got '0'/,
    ],
  ];
  for (const [argv, re] of bad) {
    assert.throws(
      () => parseGenerateArgs(argv),
      (e: Error) => e instanceof UsageError && re.test(e.message),
    );
  }
});

Deno.test("deno task generate prints the greedy continuation of the CPU reference as JSON, and exits 2 for a prompt beyond the context", async () => {
  const lm = await loadModel(LLAMA);
  const tok = await loadTokenizer(LLAMA);
  const ids = tok.encode("the cat sat");
  const session = await decodeSession(lm.model, { backend: "cpu", maxTokens: 64 });
  const expected = (await session.generate(ids, { maxNewTokens: 5 })).tokens;
  const backends = (await testGpu()) ? ["cpu", "webgpu"] : ["cpu"];
  for (const backend of backends) {
    const run = await cli([
      "--model",
      LLAMA,
      "--prompt",
      "the cat sat",
      "--max-tokens",
      "5",
      "--backend",
      backend,
      "--weights",
      "f32",
      "--ignore-eos",
      "--json",
    ]);
    assert.equal(run.code, 0, run.stderr);
    const report = JSON.parse(run.stdout);
    assert.equal(report.backend, backend);
    assert.deepEqual(report.tokens, expected);
    assert.equal(report.promptTokens, ids.length);
  }
  const tooLong = await cli(["--model", LLAMA, "--prompt", "the cat sat", "--max-tokens", "256"]);
  assert.equal(tooLong.code, 2);
  assert.match(tooLong.stderr, /exceed the model's context of 256/);
  const missing = await cli(["--model", `${LLAMA}-missing`, "--prompt", "x", "--backend", "cpu"]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /Cannot load a model/);
});
