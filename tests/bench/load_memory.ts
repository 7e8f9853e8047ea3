/**
 * Host memory of `loadModel` on a real-size checkpoint: writes a random-weight
 * bf16 folder at Llama-3.2-1B shapes (hidden 2048, MLP 8192, 16 layers, GQA
 * 32/8, vocabulary 128,256, tied, llama3 rope; 1.24 B parameters, 2.47 GB in
 * three shards with an index), then, in a fresh process, loads it, runs the
 * logits of 8 tokens on the CPU (every block widened once, the classifier in
 * chunks) and reports the peak resident memory against the checkpoint's size.
 *
 *     deno run -A tests/bench/load_memory.ts [--dir=DIR] [--keep] [--read=auto|memory|disk]
 *
 * `--read` is `loadModel`'s: "memory" holds the checkpoint, "disk" reads each
 * block from its file when used (the default for a checkpoint this size).
 *
 * Uses the file system and subprocesses; reads /proc (Linux).
 *
 * @module
 */

import { LLAMA_SHAPES, writeRandomLlama } from "../models/_random_checkpoint.ts";
import { loadModel } from "../../models/causal_lm.ts";

/** A /proc/self/status entry in bytes (VmRSS, VmHWM). */
export function procStatus(key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(
    Deno.readTextFileSync("/proc/self/status"),
  );
  return m ? Number(m[1]) * 1024 : NaN;
}

/** Loads a folder, runs 8 tokens on the CPU, prints one JSON line (run it in a fresh process). */
export async function measure(
  dir: string,
  read: "auto" | "memory" | "disk" = "auto",
): Promise<void> {
  const rss0 = procStatus("VmRSS");
  const t0 = performance.now();
  const lm = await loadModel(dir, { read });
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
  const read = (Deno.args.find((a) => a.startsWith("--read="))?.slice(7) ?? "auto") as
    | "auto"
    | "memory"
    | "disk";
  if (measureDir) {
    await measure(measureDir, read);
  } else {
    const given = Deno.args.find((a) => a.startsWith("--dir="))?.slice(6);
    const dir = given ?? await Deno.makeTempDir({ prefix: "llmc-1b-" });
    await Deno.mkdir(dir, { recursive: true });
    const t0 = performance.now();
    const bytes = given && await Deno.stat(`${dir}/config.json`).then(() => true, () => false)
      ? [...Deno.readDirSync(dir)].filter((e) => e.name.endsWith(".safetensors"))
        .reduce((n, e) => n + Deno.statSync(`${dir}/${e.name}`).size, 0)
      : await writeRandomLlama(dir, LLAMA_SHAPES["1b"]);
    console.error(
      `wrote ${(bytes / 1e9).toFixed(2)} GB in ${
        ((performance.now() - t0) / 1000).toFixed(1)
      } s to ${dir}`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL(import.meta.url).pathname, `--measure=${dir}`, `--read=${read}`],
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
