import assert from "node:assert/strict";
import { runScript } from "../_helpers.ts";
import type { EvoPressFile } from "../../cli/evopress.ts";
import { parseCompressArgs, UsageError } from "../../cli/_compress_args.ts";
import type { CompressReport } from "../../cli/_compress_command.ts";
import { fitnessWindows } from "../../cli/_calibration.ts";
import { encodeDocs } from "../../examples/datasets.ts";
import { loadTokenizer } from "../../models/tokenizer.ts";
import { cli, LLAMA, ROOT, withDir } from "./_cli.ts";

function evopress(args: string[]) {
  return runScript(`${ROOT}cli/evopress.ts`, args);
}

const small = (dir: string) => [
  "--model",
  LLAMA,
  "--bits",
  "2,3,4",
  "--group-size",
  "16",
  "--target",
  "3",
  "--db",
  `${dir}/db`,
  "--calib",
  `${dir}/calib.txt`,
  "--calib-samples",
  "2",
  "--calib-len",
  "32",
  "--fitness",
  `${dir}/calib.txt`,
  "--fitness-samples",
  "2",
  "--fitness-len",
  "16",
  "--offspring",
  "3",
  "--selection",
  "8:2,16:1",
  "--backend",
  "cpu",
  "--quiet",
];

Deno.test("evopress writes an allocation at the target that compress --recipe reproduces, and --resume continues its search", async () => {
  await withDir(async (dir) => {
    const r = await evopress([...small(dir), "--out", `${dir}/a.json`, "--generations", "3"]);
    assert.equal(r.code, 0, r.stderr);
    const a = JSON.parse(await Deno.readTextFile(`${dir}/a.json`)) as EvoPressFile;
    assert(a.done);
    assert.equal(a.state!.generation, 3);
    const values = Object.values(a.levels);
    assert.equal(values.length, 3 * 7);
    const n = values.reduce((s, l) => s + l.weights, 0);
    assert.equal(values.reduce((s, l) => s + l.weights * l.value, 0), 3 * n);
    const c = await cli([
      "--model",
      LLAMA,
      "--recipe",
      `${dir}/a.json`,
      "--out",
      `${dir}/c`,
      "--calib",
      `${dir}/calib.txt`,
      "--calib-samples",
      "2",
      "--calib-len",
      "32",
      "--backend",
      "cpu",
      "--quiet",
      "--json",
    ]);
    assert.equal(c.code, 0, c.stderr);
    const report = JSON.parse(c.stdout) as CompressReport;
    assert.equal(report.method, "recipe");
    assert(Math.abs(report.bitsPerWeight - a.bitsPerWeight) < 1e-9);
    // A search of 1 generation, resumed to 3, ends where the 3-generation search ended.
    const part = await evopress([...small(dir), "--out", `${dir}/b.json`, "--generations", "1"]);
    assert.equal(part.code, 0, part.stderr);
    const rest = await evopress([
      ...small(dir),
      "--out",
      `${dir}/b.json`,
      "--generations",
      "3",
      "--resume",
    ]);
    assert.equal(rest.code, 0, rest.stderr);
    const b = JSON.parse(await Deno.readTextFile(`${dir}/b.json`)) as EvoPressFile;
    assert.deepEqual(b.levels, a.levels);
    assert.equal(b.fitness, a.fitness);
  });
});

Deno.test("evopress refuses bad flags and a target it cannot meet", async () => {
  await withDir(async (dir) => {
    const missing = await evopress(["--model", LLAMA]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /Missing --target, --db, --out/);
    const bad = await evopress([...small(dir), "--out", `${dir}/a.json`, "--levels", "aqlm"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--levels must be gptq or sparsegpt: got 'aqlm'/);
    const steps = await evopress([...small(dir), "--out", `${dir}/a.json`, "--selection", "8"]);
    assert.equal(steps.code, 2);
    assert.match(steps.stderr, /--selection needs steps of tokens:survivors: got '8'/);
    const far = await evopress([...small(dir), "--out", `${dir}/a.json`, "--target", "5"]);
    assert.equal(far.code, 1);
    assert.match(far.stderr, /'target' must be a number in \[2, 4\]/);
  });
});

Deno.test("compress's --recipe excludes --method and writes only dense folders", () => {
  const base = ["--model", "m", "--out", "o"];
  const line = parseCompressArgs([...base, "--recipe", "r.json"]);
  assert(line.kind === "run" && line.args.recipeFile === "r.json" && line.args.method === "recipe");
  assert.throws(
    () => parseCompressArgs([...base, "--recipe", "r.json", "--method", "gptq-w4"]),
    UsageError,
  );
  assert.throws(
    () => parseCompressArgs([...base, "--recipe", "r.json", "--format", "gptq"]),
    /--recipe writes --format dense/,
  );
  assert.throws(() => parseCompressArgs(base), /Missing --method/);
});

Deno.test("fitnessWindows() deals each text's windows to the evaluation and the pool without overlap, leaving out the database's stream", async () => {
  await withDir(async (dir) => {
    const tokenizer = await loadTokenizer(LLAMA);
    const text = await Deno.readTextFile(`${dir}/calib.txt`);
    const sources = [`${dir}/calib.txt`, `${dir}/other.txt`];
    await Deno.writeTextFile(sources[1]!, text.split("").reverse().join(""));
    const options = { samples: 6, evaluationSamples: 4, length: 8, seed: 3, maxLength: 64 };
    const a = await fitnessWindows(tokenizer, sources, options);
    const b = await fitnessWindows(tokenizer, sources, options);
    assert.deepEqual(a, b);
    assert.equal(a.pool.length, 6);
    assert.equal(a.evaluation.length, 4);
    for (const [i, source] of sources.entries()) {
      const docs = (await Deno.readTextFile(source)).split(/\n\s*\n/).map((d) => d.trim())
        .filter((d) => d.length > 0);
      const stream = encodeDocs(tokenizer, docs);
      // Windows start at multiples of 8: find each one's tile in its own text's stream.
      const tileOf = (w: number[]) => {
        for (let k = 0; (k + 1) * 8 <= stream.length; k++) {
          if (w.every((t, j) => t === stream[k * 8 + j])) return k;
        }
        return -1;
      };
      const ev = a.evaluation.slice(2 * i, 2 * i + 2).map(tileOf);
      const pool = a.pool.slice(3 * i, 3 * i + 3).map(tileOf);
      assert(ev.every((k) => k >= 0) && pool.every((k) => k >= 0));
      assert.equal(new Set([...ev, ...pool]).size, 5);
    }
    // Leaving out the first 40 tokens of the first text: no window starts before them.
    const c = await fitnessWindows(tokenizer, sources, { ...options, skip: { [sources[0]!]: 40 } });
    assert.notDeepEqual(c.pool.slice(0, 3), a.pool.slice(0, 3));
  });
});
