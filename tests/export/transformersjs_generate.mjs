// Greedy generation with transformers.js on an ONNX export folder (export/to_onnx.py), fully offline,
// called the way transformers.js users call a LLaVA model: messages (an image part and a text part)
// rendered by the folder's own chat template, then processor(image, text) and model.generate.
//
//   node tests/export/transformersjs_generate.mjs --transformers INSTALL_DIR --model MODEL_DIR \
//        --dtype fp32 --items items.json --max-new-tokens 12 [--raw-images] [--pixels]
//
// INSTALL_DIR holds node_modules/@huggingface/transformers (tests/export/test_onnx_transformersjs.py installs
// it in its own cache folder, so the package is found from there rather than next to this script).
// items.json: [{"id": "...", "image": "/abs/path.png", "question": "What colour is the circle?"}, ...].
// Images of any size are prepared by examples/browser/llava_image.js (LLaVA's pad-to-square and Pillow's
// resize; transformers.js 4.3.2 has no LlavaImageProcessor), unless --raw-images (transformers.js alone).
// Prints one JSON object: {"version", "dtype", "results": [{"id", "prompt", "input_ids", "token_ids",
// "pixel_shape", "pixel_values"?}]}, where prompt is the rendered template, input_ids the processor's ids
// (image marker expanded), token_ids the generated ids only, pixel_values (with --pixels) the flat tensor.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
    options: {
        transformers: { type: 'string' },
        model: { type: 'string' },
        dtype: { type: 'string', default: 'fp32' },
        items: { type: 'string' },
        'max-new-tokens': { type: 'string', default: '16' },
        'raw-images': { type: 'boolean', default: false },
        pixels: { type: 'boolean', default: false },
    },
});
for (const key of ['transformers', 'model', 'items']) {
    if (!args[key]) {
        console.error(`missing --${key}`);
        process.exit(2);
    }
}

// The package's own node ESM entry point (its package.json "exports"), imported by path.
const pkgDir = path.join(path.resolve(args.transformers), 'node_modules', '@huggingface', 'transformers');
const pkg = JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
const entry = pkg.exports?.node?.import?.default ?? pkg.exports?.node?.import ?? pkg.main;
const tjs = await import(pathToFileURL(path.join(pkgDir, entry)).href);
const { env, AutoProcessor, LlavaForConditionalGeneration, RawImage } = tjs;
const helper = new URL('../../examples/browser/llava_image.js', import.meta.url);
const { useLlavaImagePreprocessing } = await import(helper.href);

env.allowRemoteModels = false; // offline: every file comes from the local folder
env.allowLocalModels = true;
env.useFSCache = false; // nothing is written into the shared install folder
env.useBrowserCache = false;

const modelDir = path.resolve(args.model); // absolute, so it is never taken for a hub model id
const opts = { local_files_only: true };
const processor = await AutoProcessor.from_pretrained(modelDir, opts);
if (!args['raw-images']) useLlavaImagePreprocessing(processor);
const model = await LlavaForConditionalGeneration.from_pretrained(modelDir, {
    ...opts,
    dtype: args.dtype,
    device: 'cpu',
});

const items = JSON.parse(readFileSync(args.items, 'utf8'));
const maxNewTokens = Number.parseInt(args['max-new-tokens'], 10);
const results = [];
for (const item of items) {
    const image = await RawImage.read(item.image);
    const messages = [{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: item.question }] }];
    const prompt = processor.apply_chat_template(messages, { add_generation_prompt: true });
    const inputs = await processor(image, prompt);
    const output = await model.generate({ ...inputs, max_new_tokens: maxNewTokens, do_sample: false });
    const inputIds = Array.from(inputs.input_ids.data, Number);
    const all = Array.from(output.data, Number);
    const result = { id: item.id, prompt, input_ids: inputIds, token_ids: all.slice(inputIds.length),
                     pixel_shape: inputs.pixel_values.dims };
    if (args.pixels) result.pixel_values = Array.from(inputs.pixel_values.data);
    results.push(result);
}
await model.dispose();
process.stdout.write(JSON.stringify({ version: pkg.version, dtype: args.dtype, results }) + '\n');
