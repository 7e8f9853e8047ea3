import { rowAttentionWgsl } from "../../models/_gpu_cached_attention.ts";
const a = await navigator.gpu.requestAdapter(); const d = await a!.requestDevice();
for (const [hd, rope] of [[64, false], [32, true], [64, true], [128, true]] as const) {
  const code = rowAttentionWgsl(hd, rope);
  const m = d.createShaderModule({ code });
  const info = await m.getCompilationInfo();
  for (const msg of info.messages) console.log(hd, msg.lineNum, msg.message, code.split("\n")[msg.lineNum - 1]);
}
