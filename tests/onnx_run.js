// onnx_run.js: runs an ONNX model in ONNX Runtime (npm's onnxruntime-node, CPU) on .npy
// inputs and writes its outputs as .npy, for tests/export_check.py.
//
// usage: node tests/onnx_run.js MODEL.onnx NAME=IN.npy... -- NAME=OUT.npy...
// Inputs and outputs are float32 arrays of 2 dimensions, C order (what cvae writes).
// onnxruntime-node is found in the repository's node_modules/, where the README's test
// command installs it (npm install --ignore-scripts).
'use strict';
const fs = require('fs');
const ort = require('onnxruntime-node');

function readNpy(path) {
    const b = fs.readFileSync(path);
    if (b.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error(`${path}: not a .npy file`);
    const major = b[6];
    const len = major === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
    const start = major === 1 ? 10 : 12;
    const header = b.toString('latin1', start, start + len);
    if (!/'descr': '<f4'/.test(header) || /'fortran_order': True/.test(header))
        throw new Error(`${path}: not a float32 C-order array: ${header}`);
    const dims = header.match(/'shape': \(([^)]*)\)/)[1].split(',').filter((s) => s.trim())
        .map(Number);
    const data = b.subarray(start + len);
    const values = new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length));
    return new ort.Tensor('float32', values, dims);
}

function writeNpy(path, tensor) {
    let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${tensor.dims.join(', ')}` +
        `${tensor.dims.length === 1 ? ',' : ''}), }`;
    const pad = 64 - ((10 + header.length + 1) % 64);
    header += ' '.repeat(pad % 64) + '\n';
    const head = Buffer.alloc(10);
    head.write('\x93NUMPY', 0, 'latin1');
    head[6] = 1;
    head[7] = 0;
    head.writeUInt16LE(header.length, 8);
    const data = Buffer.from(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength);
    fs.writeFileSync(path, Buffer.concat([head, Buffer.from(header, 'latin1'), data]));
}

async function main() {
    const args = process.argv.slice(2);
    const split = args.indexOf('--');
    if (args.length < 3 || split < 2) {
        console.error('usage: node onnx_run.js MODEL.onnx NAME=IN.npy... -- NAME=OUT.npy...');
        process.exit(2);
    }
    const pairs = (list) => list.map((a) => a.split('='));
    const feeds = {};
    for (const [name, path] of pairs(args.slice(1, split))) feeds[name] = readNpy(path);
    const session = await ort.InferenceSession.create(args[0], { executionProviders: ['cpu'] });
    const results = await session.run(feeds);
    for (const [name, path] of pairs(args.slice(split + 1))) {
        if (!(name in results)) throw new Error(`${args[0]} has no output ${name}`);
        writeNpy(path, results[name]);
    }
}

main().catch((e) => {
    console.error(`onnx_run.js: ${e.message}`);
    process.exit(1);
});
