// Compose primitives on one layer: rotate, prune 2:4 and quantize to 4 bits in one
// OBS pass, and compare the output error with GPTQ alone and round-to-nearest.
// Run: deno run examples/compose.ts
import { prng, randn, randomHadamard, rotateActivations, rotateWeight, tensor } from "../mod.ts";
import { dequantize, gptq, hessian, layerError, rtn, sparsegpt } from "../mod.ts";

const rng = prng(0);
const [rows, cols, tokens] = [256, 512, 2048];
const W = tensor("f32", [rows, cols], Float32Array.from(randn(rows * cols, rng)));
const xs = randn(tokens * cols, rng).map((v, i) => (i % cols < 8 ? 20 * v : v)); // outlier channels
const X = tensor("f32", [tokens, cols], Float32Array.from(xs));
const H = hessian(X); // mean of x·xᵀ over the calibration tokens

const Q = randomHadamard(cols, { seed: 1 }); // W·x = (W·Q)(Qᵀ·x)
const [Wr, Hr] = [rotateWeight(W, Q), hessian(rotateActivations(X, Q))];

const grid = { bits: 4, groupSize: 128 };
const rtnErr = layerError(W, dequantize(await rtn(W, grid)), H);
const gptqErr = layerError(W, dequantize(await gptq(W, H, grid)), H);
const joint = await sparsegpt(Wr, Hr, { structure: { kind: "nm", n: 2, m: 4 }, quantize: grid });
const jointErr = layerError(Wr, joint.weight, Hr);
console.log(`relative output error  RTN 4-bit: ${rtnErr.toExponential(3)}`);
console.log(`                       GPTQ 4-bit: ${gptqErr.toExponential(3)}`);
console.log(`  rotated 2:4 + 4-bit (one pass): ${jointErr.toExponential(3)}`);
