import assert from "node:assert/strict";
import { readSafetensors } from "../../core/safetensors_file.ts";
import { loadModel } from "../../models/causal_lm.ts";
import { compareLogits } from "../models/_hf_fixtures.ts";
import { INTEROP_CASES, makeInteropFolders } from "./make_folders.ts";

const FIXTURE = new URL("../fixtures/interop/logits.safetensors", import.meta.url).pathname;

Deno.test("our logits of the packed folders equal transformers' on the weights dequantize_check.py dequantized itself", async () => {
  const fixture = await readSafetensors(FIXTURE).catch(() => null);
  if (!fixture) {
    console.warn(
      `skipped: no ${FIXTURE}; write it on a machine with torch and transformers ` +
        "(tests/interop/dequantize_check.py, see its docs)",
    );
    return;
  }
  const dir = await Deno.makeTempDir({ prefix: "llmc-interop-" });
  try {
    await makeInteropFolders(dir);
    for (const { name } of INTEROP_CASES) {
      const ids = Array.from(fixture.tensors.get(`ids.${name}`)!.data as Int32Array);
      const theirs = fixture.tensors.get(`logits.${name}`)!.data as Float32Array;
      const lm = await loadModel(`${dir}/${name}-packed`);
      const ours = await lm.logits(ids, { backend: "cpu" });
      const { relRms, argmaxMismatches } = compareLogits(ours, theirs, lm.config.vocabSize);
      assert.ok(relRms <= 1e-4, `${name}: relative RMS ${relRms}`);
      assert.deepEqual(argmaxMismatches, [], name);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
