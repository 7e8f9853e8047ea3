/**
 * Library-internal WebAssembly SIMD micro-kernel for the packed GEMM of
 * `_dense.ts`. The module (a few hundred bytes) is assembled here from its
 * instructions rather than shipped as an opaque blob, and compiled
 * synchronously on first import. Web-standard only; where WebAssembly SIMD is
 * missing, {@linkcode createGemmKernel} returns null and `_dense.ts` keeps its
 * plain-JavaScript kernel.
 *
 * The kernel computes the same sums in the same order as the JavaScript one
 * (one multiply then one add per term, no fused multiply-add), so both give
 * bit-identical results.
 *
 * @module
 */

/** Layout of the kernel's memory, in bytes. */
export interface GemmKernelLayout {
  /** Byte offset of the packed A block (MC·KC doubles). */
  readonly aBase: number;
  /** Byte offset of the packed B block (KC·NC doubles). */
  readonly bBase: number;
  /** Byte offset of the 4×4 result tile (16 doubles). */
  readonly tileBase: number;
}

/** An instantiated kernel and the memory it reads and writes. */
export interface GemmKernel extends GemmKernelLayout {
  /** The module's memory (fixed size; never grows, so views stay valid). */
  readonly memory: WebAssembly.Memory;
  /**
   * tile[4i + j] = Σ_{p<kc} A[ao + 32p + 8i]·B[bo + 32p + 8j] (byte addresses
   * into `memory`; A and B packed as 4-row and 4-column micro-panels).
   */
  readonly kernel: (kc: number, ao: number, bo: number, tile: number) => void;
}

function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

function sleb(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

function section(id: number, body: number[]): number[] {
  return [id, ...uleb(body.length), ...body];
}

function name(s: string): number[] {
  const b = [...new TextEncoder().encode(s)];
  return [...uleb(b.length), ...b];
}

// Opcodes (WebAssembly core spec 2.0, SIMD proposal as merged).
const T_I32 = 0x7f;
const T_V128 = 0x7b;
const LOCAL_GET = 0x20;
const LOCAL_SET = 0x21;
const LOCAL_TEE = 0x22;
const I32_CONST = 0x41;
const I32_EQZ = 0x45;
const I32_LT_U = 0x49;
const I32_ADD = 0x6a;
const I32_MUL = 0x6c;
const BLOCK = 0x02;
const LOOP = 0x03;
const BR_IF = 0x0d;
const END = 0x0b;
const VOID = 0x40;
const SIMD = 0xfd;
const V128_LOAD = 0x00;
const V128_LOAD64_SPLAT = 0x0a;
const V128_STORE = 0x0b;
const F64X2_ADD = 0xf0;
const F64X2_MUL = 0xf2;

const get = (i: number): number[] => [LOCAL_GET, ...uleb(i)];
const set = (i: number): number[] => [LOCAL_SET, ...uleb(i)];
const tee = (i: number): number[] => [LOCAL_TEE, ...uleb(i)];
const i32 = (v: number): number[] => [I32_CONST, ...sleb(v)];
/** A SIMD instruction with a memory argument (alignment 2³, byte offset). */
const simdMem = (op: number, offset: number): number[] => [SIMD, ...uleb(op), 3, ...uleb(offset)];
const simd = (op: number): number[] => [SIMD, ...uleb(op)];

/** Bytes of the module: one exported memory and one exported function `kernel`. */
function assemble(pages: number): Uint8Array<ArrayBuffer> {
  const MR = 4, NV = 2, NR = 2 * NV, UNROLL = 2;
  // params 0..3: kc, ao, bo, tile; locals: MR·NV accumulators, NV b-vectors, a, end
  const KC = 0, AO = 1, BO = 2, TILE = 3;
  const ACC = 4, B = ACC + MR * NV, A = B + NV, STOP = A + 1;
  const code: number[] = [];
  // kc is even-split: the loop runs UNROLL terms per trip, the caller pads kc
  code.push(...get(AO), ...get(KC), ...i32(8 * MR), I32_MUL, I32_ADD, ...set(STOP));
  code.push(BLOCK, VOID, ...get(KC), I32_EQZ, BR_IF, 0, LOOP, VOID);
  for (let u = 0; u < UNROLL; u++) {
    for (let v = 0; v < NV; v++) {
      code.push(...get(BO), ...simdMem(V128_LOAD, 16 * v + 8 * NR * u), ...set(B + v));
    }
    for (let i = 0; i < MR; i++) {
      code.push(...get(AO), ...simdMem(V128_LOAD64_SPLAT, 8 * i + 8 * MR * u), ...set(A));
      for (let v = 0; v < NV; v++) {
        const acc = ACC + i * NV + v;
        code.push(...get(acc), ...get(A), ...get(B + v), ...simd(F64X2_MUL));
        code.push(...simd(F64X2_ADD), ...set(acc));
      }
    }
  }
  code.push(...get(BO), ...i32(8 * NR * UNROLL), I32_ADD, ...set(BO));
  code.push(...get(AO), ...i32(8 * MR * UNROLL), I32_ADD, ...tee(AO), ...get(STOP), I32_LT_U);
  code.push(BR_IF, 0, END, END);
  for (let j = 0; j < MR * NV; j++) {
    code.push(...get(TILE), ...get(ACC + j), ...simdMem(V128_STORE, 16 * j));
  }
  code.push(END);
  const locals = [2, ...uleb(MR * NV + NV + 1), T_V128, 1, T_I32];
  const body = [...locals, ...code];
  return new Uint8Array([
    0x00,
    0x61,
    0x73,
    0x6d,
    0x01,
    0x00,
    0x00,
    0x00,
    ...section(1, [1, 0x60, 4, T_I32, T_I32, T_I32, T_I32, 0]), // type: (i32 ×4) → ()
    ...section(3, [1, 0]), // function 0 has type 0
    ...section(5, [1, 0x01, ...uleb(pages), ...uleb(pages)]), // memory: min = max
    ...section(7, [2, ...name("memory"), 0x02, 0, ...name("kernel"), 0x00, 0]),
    ...section(10, [1, ...uleb(body.length), ...body]),
  ]);
}

/** Number of terms the kernel consumes per loop trip; kc must be a multiple. */
export const KERNEL_UNROLL = 2;

/**
 * Compiles and instantiates the kernel with room for an A block of `aDoubles`
 * and a B block of `bDoubles`.
 *
 * @param aDoubles Capacity of the packed A block.
 * @param bDoubles Capacity of the packed B block.
 * @returns The kernel, or null where WebAssembly SIMD is unavailable.
 */
export function createGemmKernel(aDoubles: number, bDoubles: number): GemmKernel | null {
  try {
    if (typeof WebAssembly !== "object") return null;
    const aBase = 0;
    const bBase = aBase + 8 * aDoubles;
    const tileBase = bBase + 8 * bDoubles;
    const pages = Math.ceil((tileBase + 8 * 16) / 65536);
    const bytes = assemble(pages);
    if (!WebAssembly.validate(bytes)) return null;
    const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes));
    const memory = instance.exports.memory as WebAssembly.Memory;
    const kernel = instance.exports.kernel as GemmKernel["kernel"];
    return { memory, kernel, aBase, bBase, tileBase };
  } catch {
    return null;
  }
}
