const a = await navigator.gpu.requestAdapter();
console.log([...a!.features].join(" "));
console.log(a!.info);
