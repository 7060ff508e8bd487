// Reference outputs of nsfwjs's Keras models computed by TensorFlow.js itself (pure-JS CPU backend).
//
// Usage (run by scripts/make_nsfwjs_fixture.py, which writes the request and reads the answer):
//   NODE_PATH=<dir with node_modules holding @tensorflow/tfjs> \
//     node scripts/nsfwjs_tfjs_reference.js <nsfwjs package dir> <io dir>
// <io dir>/request.json: {"cases": [{"net": "mobilenet_v2", "input": "x0.bin", "shape": [N, H, W, 3],
//   "maps": [keras layer names], "means": [keras layer names]}]}; inputs are raw uint8 NHWC.
// Writes <io dir>/<case>_<kind>_<layer>.bin (raw float32, NHWC maps or (N, C) spatial means) and
// <io dir>/answer.json with their shapes. The model is loaded from the package's own bundles
// (model.min.js, group1-shard*.min.js) with tf.io.fromMemory; nothing is fetched.
"use strict";
const fs = require("fs");
const path = require("path");
const tf = require("@tensorflow/tfjs");

function loadBundle(dir, file) {
  return require(path.resolve(dir, file));
}

async function loadModel(pkgDir, net, height, width, lastLayer) {
  const dir = path.join(pkgDir, "dist", "models", net);
  const model = JSON.parse(JSON.stringify(loadBundle(dir, "model.min.js")));
  const topology = model.modelTopology;
  const config = topology.model_config.config;
  const native = config.layers[0].config.batch_input_shape;
  const truncate = lastLayer !== null && (native[1] !== height || native[2] !== width);
  config.layers[0].config.batch_input_shape = [null, height, width, 3];
  if (truncate) {
    // the dense head only fits the native size: keep the convolutional part up to `lastLayer`
    const cut = config.layers.findIndex((l) => l.name === lastLayer);
    config.layers = config.layers.slice(0, cut + 1);
    config.output_layers = [[lastLayer, 0, 0]];
  }
  const specs = [];
  const buffers = [];
  for (const group of model.weightsManifest) {
    for (const p of group.paths) buffers.push(Buffer.from(loadBundle(dir, p + ".min.js"), "base64"));
    specs.push(...group.weights);
  }
  const data = Buffer.concat(buffers);
  const weightData = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
  const handler = tf.io.fromMemory({ modelTopology: topology, weightSpecs: specs, weightData });
  return tf.loadLayersModel(handler, { strict: !truncate });
}

async function main() {
  const [pkgDir, ioDir] = process.argv.slice(2);
  await tf.setBackend("cpu");
  const request = JSON.parse(fs.readFileSync(path.join(ioDir, "request.json"), "utf8"));
  const answer = { tfjs_version: tf.version.tfjs, backend: tf.getBackend(), cases: [] };
  for (const [k, c] of request.cases.entries()) {
    const [n, h, w] = c.shape;
    const names = [...new Set([...c.maps, ...c.means])];
    const lastLayer = c.last_layer || null;
    const model = await loadModel(pkgDir, c.net, h, w, lastLayer);
    const raw = fs.readFileSync(path.join(ioDir, c.input));
    const x = tf.tidy(() => tf.tensor4d(new Int32Array(raw), [n, h, w, 3], "int32").toFloat().div(255));
    const sub = tf.model({ inputs: model.inputs, outputs: names.map((name) => model.getLayer(name).output) });
    let outs = sub.predict(x);
    if (!Array.isArray(outs)) outs = [outs];
    const files = {};
    const wanted = [...c.maps.map((name) => ["map", name]), ...c.means.map((name) => ["mean", name])];
    for (const [kind, name] of wanted) {
      const out = outs[names.indexOf(name)];
      const t = kind === "map" ? out : tf.mean(out, [1, 2]);
      const file = `case${k}_${kind}_${name}.bin`;
      fs.writeFileSync(path.join(ioDir, file), Buffer.from((await t.data()).buffer));
      files[`${kind}:${name}`] = { file, shape: t.shape };
    }
    answer.cases.push({ net: c.net, shape: c.shape, files });
    tf.dispose([x, ...outs]);
    console.log(`case ${k}: ${c.net} ${c.shape.join("x")} done`);
  }
  fs.writeFileSync(path.join(ioDir, "answer.json"), JSON.stringify(answer, null, 1));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
