import assert from "node:assert/strict";
import {
  activationBits,
  type ActivationQuant,
  fakeQuantizeActivations,
} from "../../quantizers/activation_quant.ts";

const fq = (
  x: number[],
  tokens: number,
  spec: ActivationQuant,
) => [...fakeQuantizeActivations(Float32Array.from(x), tokens, spec)];

Deno.test("fakeQuantizeActivations() int8 per token scales each row by its amax/127, ties to even", () => {
  // row 0: amax 127, scale 1; row 1: amax 254, scale 2
  const got = fq([127, 63.5, -1, 0.49, 254, 3, -5, 1], 2, { format: "int8" });
  assert.deepEqual(got, [127, 64, -1, 0, 254, 4, -4, 0]);
});

Deno.test("fakeQuantizeActivations() int4 per token clamps to ±7 steps of amax/7", () => {
  const got = fq([14, 3, -5, 1.2], 1, { format: "int4" }); // scale 2
  assert.deepEqual(got, [14, 4, -4, 2]);
  assert.deepEqual(fq([0, 0, 0], 1, { format: "int4" }), [0, 0, 0]);
});

Deno.test("fakeQuantizeActivations() static per-tensor scales saturate above the calibrated amax", () => {
  const got = fq([20, 1, -0.25, 3], 1, { format: "int8", granularity: "tensor", absMax: 127 });
  assert.deepEqual(got, [20, 1, -0, 3]);
  const sat = fq([300, -300, 1], 1, { format: "int8", granularity: "tensor", absMax: 127 });
  assert.deepEqual(sat, [127, -127, 1]);
  const f8 = fq([1000, 3.3], 1, { format: "fp8", granularity: "tensor", absMax: 448 });
  assert.deepEqual(f8, [448, 3.25]);
});

Deno.test("fakeQuantizeActivations() fp8 per token rounds x/(amax/448) to E4M3", () => {
  // amax 448 → scale 1: 3.3 → 3.25; second row amax 896 → scale 2: 6.6/2 = 3.3 → 3.25·2
  assert.deepEqual(fq([448, 3.3, 896, 6.6], 2, { format: "fp8" }), [448, 3.25, 896, 6.5]);
});

Deno.test("fakeQuantizeActivations() mxfp4 scales blocks of 32 by 2^(⌊log₂ amax⌋ − 2)", () => {
  const x = new Array(64).fill(0);
  x[0] = 5; // block 0 amax 5 → scale 1
  x[1] = 2.6;
  x[2] = -1.2;
  x[32] = 40; // block 1 amax 40 → 2^(5 − 2) = 8; 40/8 = 5 ties between 4 and 6: the even code, 4
  x[33] = 13;
  const got = fq(x, 1, { format: "mxfp4" });
  assert.deepEqual([got[0], got[1], got[2], got[32], got[33]], [4, 3, -1, 32, 12]);
});

Deno.test("fakeQuantizeActivations() nvfp4 per token uses a token scale amax/(6·448) and E4M3 block scales", () => {
  const x = new Array(32).fill(0);
  x[0] = 6 * 448; // token scale 1
  x[16] = 6; // block 1 amax 6 → block scale E4M3(1) = 1
  x[17] = 2.4;
  const got = fq(x, 1, { format: "nvfp4" });
  assert.deepEqual([got[0], got[16], got[17]], [2688, 6, 2]);
});

Deno.test("fakeQuantizeActivations() keeps QUIK outlier columns on their own int8 scale", () => {
  const got = fq([100, 3, 1.3, -2], 1, {
    format: "int4",
    outliers: { columns: [0], format: "int8" },
  });
  // column 0: int8 with scale 100/127 → exact; the rest: int4 with scale 3/7
  const s = Math.fround(3 / 7);
  assert.equal(got[0], 100);
  assert.deepEqual(got.slice(1), [Math.fround(7 * s), Math.fround(3 * s), Math.fround(-5 * s)]);
});

Deno.test("fakeQuantizeActivations() does not modify its input and names bad options", () => {
  const x = Float32Array.from([1.3, -2.2]);
  fakeQuantizeActivations(x, 1, { format: "int4" });
  assert.deepEqual([...x], [Math.fround(1.3), Math.fround(-2.2)]);
  const bad = (spec: unknown, re: RegExp) =>
    assert.throws(() => fakeQuantizeActivations(x, 1, spec as ActivationQuant), re);
  bad(
    { format: "int3" },
    /'format' must be one of int8, int4, fp8, mxfp4, nvfp4: current value is int3/,
  );
  bad({ format: "int8", granularity: "row" }, /'granularity' must be "token" or "tensor"/);
  bad({ format: "int8", granularity: "tensor" }, /'absMax' must be a finite number/);
  bad({ format: "mxfp4", granularity: "tensor", absMax: 1 }, /no meaning for mxfp4/);
  bad(
    { format: "int4", outliers: { columns: [2], format: "int8" } },
    /'outliers.columns'.*found 2/,
  );
  bad({ format: "int4", outliers: { columns: [0], format: "int4" } }, /'outliers.format'/);
  assert.throws(() => fakeQuantizeActivations(x, 3, { format: "int8" }), /'tokens' must divide/);
});

Deno.test("activationBits() counts element bits, per-token scales and block scales", () => {
  assert.equal(activationBits({ format: "int8" }, 256), 8 + 32 / 256);
  assert.equal(activationBits({ format: "int8", granularity: "tensor", absMax: 1 }, 256), 8);
  assert.equal(activationBits({ format: "mxfp4" }, 256), 4.25);
  assert.equal(activationBits({ format: "nvfp4" }, 256), 4.5 + 32 / 256);
  const quik = { format: "int4", outliers: { columns: [0, 1], format: "int8" } } as const;
  assert.equal(activationBits(quik, 8), (6 * 4 + 2 * 8 + 64) / 8);
});
