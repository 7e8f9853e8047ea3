import { acquireGpu, storageBuffer, uploadBuffer, writeBuffer } from "../../kernels/backend.ts";
import { encodeCachedAttention, rowAttentionWgsl } from "../../models/_gpu_cached_attention.ts";
import { cachedPipeline } from "../../kernels/backend.ts";
import { encodeCachedAttention as oldAttention } from "../../old_tree/models/_gpu_cached_attention.ts";
import { ropeTable } from "../../models/_gpu_block.ts";
import { timeCalls } from "../bench/_qmatmul_common.ts";
const gpu = (await acquireGpu())!;
const nHeads = 32, nKv = 8, hd = 64, cap = 1024, ld = (nHeads + 2 * nKv) * hd;
const qkv = uploadBuffer(gpu, Float32Array.from({ length: ld }, (_, i) => Math.sin(i)));
const out = storageBuffer(gpu, nHeads * hd * 4);
const caches = Array.from({ length: 16 }, () => ({
  k: uploadBuffer(gpu, Float32Array.from({ length: cap * nKv * hd }, (_, i) => Math.cos(i * 0.37))),
  v: uploadBuffer(gpu, Float32Array.from({ length: cap * nKv * hd }, (_, i) => Math.sin(i * 0.11))),
}));
const rope = uploadBuffer(gpu, ropeTable(hd, 500000, cap, undefined));
const pos = storageBuffer(gpu, 4);
const shape = { rows: 1, nHeads, nKvHeads: nKv, hd, ld, cap };
for (const p of [16, 80, 144, 272, 528, 1000]) {
  writeBuffer(gpu, pos, 0, Uint32Array.of(p));
  const tn = await timeCalls(gpu, 16, (b, i) => encodeCachedAttention(b, out, qkv, caches[i % 16]!, pos, shape, rope));
  // deno-lint-ignore no-explicit-any
  const to = await timeCalls(gpu, 16, (b, i) => oldAttention(b as any, out, qkv, caches[i % 16]!, pos, shape, rope));
  const p128 = cachedPipeline(gpu, "row128", () => rowAttentionWgsl(hd, true, 128));
  const t128 = await timeCalls(gpu, 16, (b, i) => {
    const u = b.uniform([{ u32: 1 }, { u32: nHeads }, { u32: nHeads / nKv }, { u32: nKv * hd }, { u32: ld }, { u32: nHeads * hd }, { f32: 1 / Math.sqrt(hd) }, { u32: nHeads * hd }, { u32: (nHeads + nKv) * hd }, { u32: cap }]);
    b.dispatch(p128, [out, qkv, caches[i % 16]!.k, caches[i % 16]!.v, pos, u, rope], [nHeads]);
  });
  console.log(`attention at position ${p}: new ${(tn.gpu * 1e6).toFixed(2)} us, new with 128 threads ${(t128.gpu * 1e6).toFixed(2)} us, old ${(to.gpu * 1e6).toFixed(2)} us a call`);
}
