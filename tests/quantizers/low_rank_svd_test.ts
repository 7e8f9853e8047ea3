import assert from "node:assert/strict";
import { eigs } from "mathjs";
import { tensor } from "../../core/tensor.ts";
import { prng } from "../../core/prng.ts";
import { lowRankSvd } from "../../quantizers/low_rank_svd.ts";
import { assertClose } from "../_helpers.ts";

Deno.test("lowRankSvd() leaves exactly the discarded squared singular values of ΔW", async () => {
  const g = prng(3);
  for (const [rows, cols] of [[7, 12], [12, 7]] as const) {
    const w = tensor(
      "f32",
      [rows, cols],
      Float32Array.from({ length: rows * cols }, () => g.normal()),
    );
    const approx = tensor(
      "f32",
      [rows, cols],
      Float32Array.from(w.data, (v) => v + 0.1 * g.normal()),
    );
    const d = Array.from(
      { length: rows },
      (_, i) =>
        Array.from({ length: cols }, (_, j) => w.data[i * cols + j]! - approx.data[i * cols + j]!),
    );
    const ddt = d.map((a) => d.map((b) => a.reduce((s, v, j) => s + v * b[j]!, 0)));
    const sq = (eigs(ddt).values as number[]).map((v) => Math.max(0, v)).sort((p, q) => q - p);
    const total = sq.reduce((s, v) => s + v, 0);
    for (const rank of [1, 3, Math.min(rows, cols)]) {
      const f = await lowRankSvd(w, approx, { rank, dtype: "f32" });
      const oracle = sq.slice(rank).reduce((s, v) => s + v, 0);
      assertClose(f.stats.discarded, oracle, { atol: 1e-10 * total, rtol: 1e-8 });
      assertClose(f.stats.error, oracle, { atol: 1e-6 * total });
      assertClose(f.stats.errorBefore, total, { rtol: 1e-6, atol: 0 });
      assert.equal(f.kind, "svd");
      assert.deepEqual([f.b.shape, f.a.shape], [[rows, rank], [rank, cols]]);
    }
  }
});

Deno.test("lowRankSvd() rejects a rank above min(rows, cols) and a non-finite weight", async () => {
  const w = tensor("f32", [3, 5], new Float32Array(15).fill(1));
  await assert.rejects(
    () => lowRankSvd(w, w, { rank: 4 }),
    /lowRankSvd\(\) as 'rank' must be an integer in \[1, min\(rows, cols\) = 3\].*current value is 4/,
  );
  const bad = tensor("f32", [3, 5], new Float32Array(15).fill(1));
  bad.data[2] = Infinity;
  await assert.rejects(() => lowRankSvd(w, bad, { rank: 1 }), /'approx' must be finite: element 2/);
});
