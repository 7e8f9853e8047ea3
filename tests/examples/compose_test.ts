import assert from "node:assert/strict";

Deno.test("examples/compose.ts (README's example) runs and GPTQ beats round-to-nearest", async () => {
  const script = new URL("../../examples/compose.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const value = (label: string): number => {
    const m = text.match(new RegExp(`${label}: ([0-9.e+-]+)`));
    assert.ok(m, `no '${label}' line in:\n${text}`);
    return Number(m[1]);
  };
  const rtn = value("RTN 4-bit"), gptq = value("GPTQ 4-bit"), joint = value("one pass\\)");
  assert.ok(gptq < rtn, `GPTQ ${gptq} vs RTN ${rtn}`);
  assert.ok(joint > 0 && joint < 0.1, `joint ${joint}`);
});
