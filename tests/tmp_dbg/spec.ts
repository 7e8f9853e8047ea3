import { acquireGpu } from "../../kernels/backend.ts";
import { qmatmulResolvedSpec, qmatmulSweptFewRowSpec, qmatmulFewRowSpec } from "../../kernels/qmatmul_default_spec.ts";
import { packWeights } from "../../quantizers/pack.ts";
import { rtn } from "../../quantizers/rtn.ts";
const gpu = (await acquireGpu())!;
for (const [n, k] of [[3072, 2048], [2048, 2048], [16384, 2048], [2048, 8192]]) {
  const w = new Float32Array(n * k).map((_, i) => Math.sin(i));
  const q = await rtn({ data: w, shape: [n, k] } as any, { bits: 4, groupSize: 128 } as any);
  const p = packWeights(q as any, { scaleType: "f16" });
  console.log(n, k, JSON.stringify(qmatmulResolvedSpec(gpu, p, 1)));
}
