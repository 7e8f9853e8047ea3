import { convert } from "../../core/convert.ts";
import { prng } from "../../core/prng.ts";
import { parseSafetensors, serializeSafetensors } from "../../core/safetensors.ts";
import { tensor } from "../../core/tensor.ts";

const n = 1 << 20;
const rng = prng(1);
const x32 = tensor("f32", [n], Float32Array.from({ length: n }, () => rng.normal() * 10));
const x64 = convert(x32, "f64");
const xbf = convert(x32, "bf16");
const xe4 = convert(x32, "f8e4m3");
const file = serializeSafetensors({ a: x32, b: xbf, c: xe4 });

Deno.bench("convert f32 → bf16, 1M elements (bit path)", { group: "bf16" }, () => {
  convert(x32, "bf16");
});
Deno.bench(
  "convert f64 → bf16, 1M elements (round-to-odd, one rounding)",
  { group: "bf16" },
  () => {
    convert(x64, "bf16");
  },
);
Deno.bench("convert bf16 → f32, 1M elements", { group: "bf16" }, () => {
  convert(xbf, "f32");
});
Deno.bench("convert f32 → f16, 1M elements (Float16Array)", () => {
  convert(x32, "f16");
});
Deno.bench("convert f32 → f8e4m3, 1M elements (saturating RNE)", { group: "fp8" }, () => {
  convert(x32, "f8e4m3");
});
Deno.bench("convert f8e4m3 → f32, 1M elements (table)", { group: "fp8" }, () => {
  convert(xe4, "f32");
});
Deno.bench("serializeSafetensors, 7 MB", { group: "safetensors" }, () => {
  serializeSafetensors({ a: x32, b: xbf, c: xe4 });
});
Deno.bench("parseSafetensors, 7 MB (views)", { group: "safetensors" }, () => {
  parseSafetensors(file);
});
Deno.bench("parseSafetensors, 7 MB (copy: true)", { group: "safetensors" }, () => {
  parseSafetensors(file, { copy: true });
});
